# nftbalance: `make demo` runs the main job, `make test` runs every test (as root: the
# kernel tests build their own network namespaces). Both install missing Debian packages.

SHELL := /bin/bash
CARGO ?= cargo
# Root's tools (nft, ip, iptables-legacy-restore) live in sbin; CI's PATH may lack it.
export PATH := /usr/local/sbin:/usr/sbin:/sbin:$(HOME)/.cargo/bin:$(PATH)

# nftables/iptables/iproute2: the real tools the tests use as oracles.
# libnftnl-dev, libmnl-dev, pkg-config: the netlink write path links libnftnl.
# strace: one test compares our netlink messages with the ones nft sends.
# flock (util-linux): a test holds a table's lock as another nftbalance would.
# keepalived, conntrackd, conntrack: the router pair runs the real engines (VRRP, state
# replication) in namespaces and reads the replicated table with conntrack -L.
# prometheus (promtool) and curl: the metrics tests check the exposition and scrape the endpoint.
# python3-jsonschema: the validator the spec's JSON Schema is tested with.
# dpkg-dev (dpkg-shlibdeps: the package's Depends), lintian, man-db and groff-base (man pages
# rendered with warnings on), systemd (systemd-analyze verify): the Debian package's tests.
APT_PACKAGES := nftables iptables iproute2 libnftnl-dev libmnl-dev pkg-config strace util-linux \
	prometheus curl python3-jsonschema dpkg-dev lintian man-db groff-base systemd \
	keepalived conntrackd conntrack

.PHONY: all deps cargo-deb bench-deps build demo test deb lint bless bench stress fuzz clean

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "missing Debian packages: $$missing (run as root, or: sudo apt-get install $$missing)" >&2; exit 1; \
		fi; \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }

build: deps
	$(CARGO) build --release --locked --workspace --bins

# The main job, live: the seed's router in throwaway namespaces, 200 real connections.
demo: build
	@echo "# nftbalance dump fixtures/specs/seed.json (the ruleset it will apply)"
	@./target/release/nftbalance dump fixtures/specs/seed.json
	@./target/release/nbdemo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# cargo-deb packs the Debian package (`make deb`, and the package test in `make test`).
# --debug: it compiles in 44 s of CPU instead of 103 s, and packs the test's package as fast
# (3.9 s against 3.4 s; `/usr/bin/time cargo install [--debug] cargo-deb`, 2026-11-29).
CARGO_DEB_VERSION := 3.8.0
cargo-deb:
	@command -v cargo-deb >/dev/null || \
		$(CARGO) install --debug cargo-deb --locked --version $(CARGO_DEB_VERSION)

# The Debian package of a release build, checked by lintian:
# target/debian/nftbalance_VERSION-1_ARCH.deb.
deb: deps cargo-deb
	$(CARGO) build --release --locked -p nftbalance
	@deb=$$(packaging/build-deb.sh target target/debian/) && echo "$$deb" && \
		lintian --fail-on error,warning "$$deb"

test: deps lint cargo-deb
	$(CARGO) test --workspace --locked
	@# Every test namespace is removed on drop; prove nothing was left behind.
	@left=$$(ip netns list | awk '{print $$1}' | grep -E '^nb[a-z]*-' || true); \
	if [ -n "$$left" ]; then echo "tests left namespaces behind: $$left" >&2; exit 1; fi

# The kill -9 test with a full diff after every round that changed the ruleset (make test
# diffs every fifth); NFTBALANCE_STRESS_PREFIXES changes the size (default 100k).
stress: deps
	NFTBALANCE_STRESS_DIFF_ALL=1 $(CARGO) test --workspace --locked --test reliability -- kill_9
	@# watch's repairs under load: out of make test until a rare stream reset is explained.
	$(CARGO) test --locked -p nftbalance-integration --test adversity -- --ignored
	@# translate's differential test on 400 generated legacy balancers (make test runs 40).
	$(CARGO) build --locked --workspace --bins
	NFTBALANCE_DIFF_INPUTS=400 $(CARGO) test --locked -p nftbalance-integration --test translate_differential

# Rewrites the golden dumps and the expected error messages; review with `git diff`.
bless:
	NFTBALANCE_BLESS=1 $(CARGO) test -p nftbalance-ruleset --test golden
	NFTBALANCE_BLESS=1 $(CARGO) test -p nftbalance --test bad_specs
	NFTBALANCE_BLESS=1 $(CARGO) test -p nftbalance-legacy --test golden
	NFTBALANCE_BLESS=1 $(CARGO) test -p nftbalance-translate --test golden
	NFTBALANCE_BLESS=1 $(CARGO) test -p nftbalance-mwan3 --test golden
	NFTBALANCE_BLESS=1 $(CARGO) test -p nftbalance-routing --test golden

bench-deps: deps
	@command -v hyperfine >/dev/null && [ -x /usr/bin/time ] && command -v python3 >/dev/null || { \
		echo "installing: hyperfine time python3"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine time python3 >/dev/null; }

# Side-by-side timings against the peer tools, in throwaway namespaces (root).
bench: bench-deps
	$(CARGO) build --release --locked --workspace --bins
	bench/apply.sh
	bench/reapply.sh
	bench/translate.sh
	bench/diff.sh
	$(CARGO) bench --locked -q -p nftbalance-integration --bench failover
	./target/release/nbbench

# The translate parser under cargo-fuzz for a bounded time (FUZZ_SECONDS, default 60); needs a
# nightly toolchain (rustup) and installs cargo-fuzz if missing. Not part of `make test`.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@# Seed the corpora from the fixtures (the fuzzer adds what it finds next to them).
	mkdir -p fuzz/corpus/translate fuzz/corpus/spec
	cp fixtures/legacy/seed.* fixtures/legacy/seed-routing.sh fixtures/legacy/corpus/*.save fuzz/corpus/translate/
	cp fixtures/specs/*.json fuzz/corpus/spec/
	cd fuzz && $(CARGO) +nightly fuzz run translate corpus/translate -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && $(CARGO) +nightly fuzz run spec corpus/spec -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
