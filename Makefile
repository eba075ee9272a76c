# CowMem - copy-on-write memory regions for Linux.
#
# GNU make. `make help` lists the targets. Everything is built into build/;
# the Swift package builds the same C sources through SwiftPM into .build/.

# `CC ?= gcc` would not work: make predefines CC=cc, so only replace that
# built-in default and keep anything given on the command line or in the
# environment.
ifeq ($(origin CC),default)
CC := gcc
endif
AR ?= ar
INSTALL ?= install
PKG_CONFIG ?= pkg-config
SWIFT ?= swift

PREFIX ?= /usr/local
DESTDIR ?=
INCLUDEDIR ?= $(PREFIX)/include
LIBDIR ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR ?= $(PREFIX)/share/man

# Arguments for `make demo`, e.g. make demo DEMO_ARGS="--size-mib 256".
DEMO_ARGS ?=

# The version lives in one place, the public header.
HEADER := Sources/CCowMem/include/cowmem.h
version_part = $(shell sed -n 's/^\#define COWMEM_VERSION_$(1)[[:space:]]*//p' $(HEADER))
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION := $(VERSION_MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)

BUILD := build
LIB_STATIC := $(BUILD)/libcowmem.a
LIB_SONAME := libcowmem.so.$(VERSION_MAJOR)
LIB_REAL := libcowmem.so.$(VERSION)
LIB_SHARED := $(BUILD)/$(LIB_REAL)
LIB_LINKS := $(BUILD)/$(LIB_SONAME) $(BUILD)/libcowmem.so
PC := $(BUILD)/cowmem.pc
VERSION_SCRIPT := Support/libcowmem.map

# User-overridable optimisation/debug flags; the rest is required to build
# the library as designed (hidden visibility: only COWMEM_API symbols leave).
CFLAGS ?= -O2 -g
LDFLAGS ?=
COWMEM_CFLAGS := -std=gnu11 -Wall -Wextra -fPIC -fvisibility=hidden \
	-D_GNU_SOURCE -ISources/CCowMem/include -ISources/CCowMem
ALL_CFLAGS = $(COWMEM_CFLAGS) $(CFLAGS) -MMD -MP
# Examples see only the public header, as a user program would. Tests may
# also include the private header to test internal pieces on their own (they
# link the static archive, where internal symbols are still visible).
EXAMPLE_CFLAGS = -std=gnu11 -Wall -Wextra -D_GNU_SOURCE \
	-ISources/CCowMem/include $(CFLAGS) -MMD -MP
TEST_CFLAGS = $(EXAMPLE_CFLAGS) -ISources/CCowMem

LIB_SOURCES := $(sort $(wildcard Sources/CCowMem/*.c))
LIB_OBJECTS := $(LIB_SOURCES:Sources/CCowMem/%.c=$(BUILD)/obj/%.o)

TEST_SOURCES := $(sort $(wildcard Tests/c/*.c))
TEST_PROGRAMS := $(TEST_SOURCES:Tests/c/%.c=$(BUILD)/tests/%)

EXAMPLE_SOURCES := $(sort $(wildcard Examples/c/*.c))
EXAMPLE_PROGRAMS := $(EXAMPLE_SOURCES:Examples/c/%.c=$(BUILD)/examples/%)

MAN_PAGES := $(sort $(wildcard Documentation/man/man3/*.3))

# install-check installs here and builds the examples against that copy
# (with a cowmem.pc of its own, so build/cowmem.pc keeps PREFIX).
CHECK_PREFIX := $(abspath $(BUILD)/install-check/prefix)
CHECK_BIN := $(BUILD)/install-check/bin

.PHONY: all lib tests examples test check-c check-c-without-folds check-symbols check-deps check-c-unprivileged install-check check-man \
	check-swift docs demo install uninstall clean help
.DEFAULT_GOAL := all

all: lib tests examples

lib: $(LIB_STATIC) $(LIB_SHARED) $(LIB_LINKS) $(PC)

tests: $(TEST_PROGRAMS)

examples: $(EXAMPLE_PROGRAMS)

help:
	@echo 'make                build build/libcowmem.{a,so}, cowmem.pc, C tests and examples'
	@echo 'make test           the whole suite: C tests, install-check, symbols, file dependencies, man pages, fuzz corpus, swift test'
	@echo 'make check-c        build and run the C tests only'
	@echo 'make check-c-without-folds  the C tests where clones cannot fold: no MINOR faults, and the memfd backend'
	@echo 'make check-symbols  every global of the static archive starts with cowmem'
	@echo 'make check-deps     no library source file calls into one that calls it'
	@echo 'make check-c-unprivileged  the C tests as user $$(TEST_USER) (run as root)'
	@echo 'make install-check  install into a scratch prefix and build the examples via pkg-config'
	@echo 'make check-swift    swift test only'
	@echo 'make docs           the DocC catalogue of the Swift overlay, warnings as errors'
	@echo 'make sanitize       C tests under ASan+UBSan, threaded ones under TSan ($(BUILD)/asan, tsan)'
	@echo 'make valgrind       a few C tests under valgrind memcheck'
	@echo 'make test-kernels   the C tests on Debian 6.1 and 5.10 kernels under QEMU (TCG; slow)'
	@echo 'make stress         the soak, STRESS_SECONDS (default 120) long'
	@echo 'make fuzz           libFuzzer on each backend, FUZZ_SECONDS (default 60) each (clang)'
	@echo 'make fuzz-replay    the fuzz corpus (Tests/fuzz/corpus) on each backend; part of make test'
	@echo 'make examples       build the C examples into build/examples/'
	@echo 'make bench          every benchmark side by side (tables, CSV, chart); see Benchmarks/README.md'
	@echo 'make bench-tracking dirty pages, reset, save and load only ($$(TRACK_BENCH_ARGS))'
	@echo 'make bench-steady   write, snapshot, keep 8, repeat: clone, memcpy, fork ... ($$(STEADY_BENCH_ARGS))'
	@echo 'make bench-chain    clones of clones, 1,000 and 10,000 deep: build and destroy ($$(CHAIN_BENCH_ARGS))'
	@echo 'make demo           swift run -c release cowmem-demo $$(DEMO_ARGS)'
	@echo '                    e.g. make demo DEMO_ARGS="--size-mib 256"'
	@echo 'make install        install into $$(DESTDIR)$$(PREFIX) (PREFIX=$(PREFIX))'
	@echo 'make uninstall      remove what install put there'
	@echo 'make clean          remove build/'
	@echo 'Variables: CC CFLAGS LDFLAGS PREFIX DESTDIR DEMO_ARGS SWIFT'

# ---- The library ---------------------------------------------------------

# The objects record the compiler and flags that built them, so that
# `make test CC=clang` after a gcc build (or the reverse) rebuilds instead of
# testing the other compiler's objects. The same stamp trick as cowmem.pc's.
COMPILER_FLAGS := $(CC)|$(CFLAGS)|$(LDFLAGS)
COMPILER_STAMP := $(BUILD)/obj/compiler
ifneq ($(COMPILER_FLAGS),$(shell cat $(COMPILER_STAMP) 2>/dev/null))
.PHONY: $(COMPILER_STAMP)
endif
$(COMPILER_STAMP): | $(BUILD)/obj
	@echo '$(COMPILER_FLAGS)' > $@

$(BUILD)/obj/%.o: Sources/CCowMem/%.c $(COMPILER_STAMP) | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIB_STATIC): $(LIB_OBJECTS)
	@rm -f $@
	$(AR) rcs $@ $^

# --no-undefined: a symbol the engine forgot to define fails here, not in
# the program that loads the library.
$(LIB_SHARED): $(LIB_OBJECTS) $(VERSION_SCRIPT)
	$(CC) -shared $(CFLAGS) $(LDFLAGS) -Wl,-soname,$(LIB_SONAME) \
		-Wl,--version-script=$(VERSION_SCRIPT) -Wl,--no-undefined \
		-o $@ $(LIB_OBJECTS) -lpthread

$(LIB_LINKS): $(LIB_SHARED)
	ln -sf $(LIB_REAL) $@

# cowmem.pc names PREFIX, so it must be rebuilt when PREFIX changes. The
# stamp file holds the paths of the last build and is rewritten only when
# they differ.
PC_PATHS := $(PREFIX)|$(LIBDIR)|$(INCLUDEDIR)|$(VERSION)
PC_STAMP := $(PC).paths
ifneq ($(PC_PATHS),$(shell cat $(PC_STAMP) 2>/dev/null))
.PHONY: $(PC_STAMP)
endif
$(PC_STAMP):
	@mkdir -p $(@D)
	@echo '$(PC_PATHS)' > $@

$(PC): Support/cowmem.pc.in $(PC_STAMP)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
		$< > $@

# ---- Tests and examples --------------------------------------------------

# Tests link the static archive so that they run without an installed
# library or an rpath.
# alloc_failures.c makes the library's allocations fail on purpose.
TEST_LDFLAGS_alloc_failures := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
$(BUILD)/tests/%: Tests/c/%.c $(LIB_STATIC) | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(LDFLAGS) $(TEST_LDFLAGS_$*) -o $@ $< $(LIB_STATIC) -lpthread

# Examples link the shared library, found next to them via the rpath.
$(BUILD)/examples/%: Examples/c/%.c $(LIB_SHARED) $(LIB_LINKS) | $(BUILD)/examples
	$(CC) $(EXAMPLE_CFLAGS) $(LDFLAGS) -o $@ $< -L$(BUILD) \
		-Wl,-rpath,'$$ORIGIN/..' -lcowmem -lpthread

$(BUILD) $(BUILD)/obj $(BUILD)/tests $(BUILD)/examples:
	@mkdir -p $@

# ---- The suite -------------------------------------------------------------

# Every step runs even when an earlier one failed, so one run shows
# everything; the target fails at the end if any step did.
test: all
	@failed=''; \
	$(MAKE) --no-print-directory check-c || failed="$$failed C-tests"; \
	$(MAKE) --no-print-directory check-c-without-folds || failed="$$failed C-tests-without-folds"; \
	$(MAKE) --no-print-directory install-check || failed="$$failed install-check"; \
	$(MAKE) --no-print-directory check-symbols || failed="$$failed symbols"; \
	$(MAKE) --no-print-directory check-deps || failed="$$failed file-dependencies"; \
	$(MAKE) --no-print-directory check-man || failed="$$failed man-pages"; \
	$(MAKE) --no-print-directory fuzz-replay || failed="$$failed fuzz-replay"; \
	$(MAKE) --no-print-directory check-swift || failed="$$failed swift-test"; \
	echo; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo 'make test: all steps passed'

check-c: tests
	@Support/run-c-tests $(TEST_PROGRAMS)

# A program that links the static archive must not meet the library's
# internal names: every global it defines starts with cowmem.
check-symbols: $(LIB_STATIC)
	@echo '== symbols: every global of $(LIB_STATIC) starts with cowmem'
	@bad=$$(nm -g --defined-only $(LIB_STATIC) | \
		awk 'NF == 3 && $$3 !~ /^cowmem/ { print $$3 }' | sort -u); \
	if [ -n "$$bad" ]; then echo "not namespaced:"; echo "$$bad"; exit 1; fi; \
	echo "symbols: $$(nm -g --defined-only $(LIB_STATIC) | awk 'NF == 3' | wc -l) globals, all namespaced"

# Calls between the library's files go one way (ARCHITECTURE.md): the
# globals each object uses and defines, checked for loops.
check-deps: $(LIB_OBJECTS)
	@echo '== file dependencies: no source file calls into one that calls it'
	@Support/check-file-deps $(LIB_OBJECTS)

# The fuzzer (Tests/fuzz): operation sequences against a memcpy model.
# `make fuzz-replay` (part of `make test`) runs the committed corpus with
# $(CC) on each backend; `make fuzz FUZZ_SECONDS=N` fuzzes each backend for
# N seconds with libFuzzer (clang, ASan, UBSan), starting from the corpus,
# and keeps what it finds under $(BUILD)/fuzz (Tests/fuzz/corpus is only
# read; merge new inputs into it by hand).
FUZZ_SECONDS ?= 60
FUZZ_BACKENDS := userfaultfd userfaultfd-user memfd
FUZZ_CC ?= clang
FUZZ_CORPUS := Tests/fuzz/corpus
FUZZ_REPLAY := $(BUILD)/fuzz/replay
FUZZ_PROGRAM := $(BUILD)/fuzz/fuzz_ops

.PHONY: fuzz fuzz-replay

$(FUZZ_REPLAY): Tests/fuzz/fuzz_ops.c Tests/fuzz/replay.c $(HEADER) $(LIB_STATIC)
	@mkdir -p $(@D)
	$(CC) $(EXAMPLE_CFLAGS) -o $@ Tests/fuzz/fuzz_ops.c Tests/fuzz/replay.c \
		$(LIB_STATIC) -lpthread

$(FUZZ_PROGRAM): Tests/fuzz/fuzz_ops.c $(LIB_SOURCES) $(wildcard Sources/CCowMem/*.h) $(HEADER)
	@mkdir -p $(@D)
	$(FUZZ_CC) -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined -fuse-ld=bfd -D_GNU_SOURCE \
		-ISources/CCowMem/include -ISources/CCowMem -o $@ Tests/fuzz/fuzz_ops.c \
		$(LIB_SOURCES) -lpthread

fuzz-replay: $(FUZZ_REPLAY)
	@echo '== fuzz corpus replayed on each backend ($(FUZZ_CORPUS))'
	@for backend in $(FUZZ_BACKENDS); do \
		printf '%-17s ' "$$backend:"; \
		COWMEM_BACKEND=$$backend $(FUZZ_REPLAY) $(FUZZ_CORPUS) || exit 1; \
	done

fuzz: $(FUZZ_PROGRAM)
	@for backend in $(FUZZ_BACKENDS); do \
		echo "== fuzzing on $$backend for $(FUZZ_SECONDS) s"; \
		log=$(BUILD)/fuzz/$$backend.log; \
		mkdir -p $(BUILD)/fuzz/corpus-$$backend; \
		COWMEM_BACKEND=$$backend $(FUZZ_PROGRAM) -max_total_time=$(FUZZ_SECONDS) \
			-max_len=1024 -print_final_stats=1 \
			$(BUILD)/fuzz/corpus-$$backend $(FUZZ_CORPUS) > $$log 2>&1; \
		rc=$$?; \
		grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::number_of_executed_units' $$log; \
		if [ $$rc -ne 0 ]; then tail -40 $$log; echo "make fuzz: FAILED on $$backend"; exit 1; fi; \
	done

# Clones fold only with MINOR faults on shmem, MREMAP_DONTUNMAP and
# /proc/self/{pagemap,mem} (ARCHITECTURE.md, "Without folds"). Kernels
# and systems without them take the other path, tested whole here: once
# with userfaultfd but no MINOR faults (5.10's case), once on the memfd
# backend (no userfaultfd: every page is in memory before a call returns).
check-c-without-folds: tests
	@failed=''; \
	echo '== C tests without folds: userfaultfd, no MINOR faults (COWMEM_DISABLE=minor)'; \
	COWMEM_DISABLE=minor Support/run-c-tests $(TEST_PROGRAMS) || failed="$$failed minor"; \
	echo '== C tests without folds: the memfd backend (COWMEM_BACKEND=memfd)'; \
	COWMEM_BACKEND=memfd Support/run-c-tests $(TEST_PROGRAMS) || failed="$$failed memfd"; \
	if [ -n "$$failed" ]; then echo "check-c-without-folds: FAILED:$$failed"; exit 1; fi

# The same programs as an ordinary user (root only): DESIGN.md section 4 says
# CowMem must work unprivileged, where userfaultfd may serve user-mode
# faults only. Needs a user that can reach build/ (nobody by default).
TEST_USER ?= nobody
check-c-unprivileged: tests
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo 'check-c-unprivileged: run as root (it drops to $(TEST_USER))'; exit 1; fi
	@Support/run-c-tests --as-user $(TEST_USER) $(TEST_PROGRAMS)

install-check: lib
	@echo '== install-check: make install into a scratch prefix, build via pkg-config'
	@rm -rf $(BUILD)/install-check
	@$(MAKE) --no-print-directory -s install PREFIX=$(CHECK_PREFIX) DESTDIR= \
		PC=$(BUILD)/install-check/cowmem.pc
	@CC='$(CC)' PKG_CONFIG='$(PKG_CONFIG)' Support/install-check $(CHECK_PREFIX) $(CHECK_BIN) $(LIB_SONAME) $(EXAMPLE_SOURCES)

# The ERRORS sections against the header comments, and against the cases
# of Tests/c/errnos.c (one per documented errno of each function).
check-man: $(BUILD)/tests/errnos
	@echo '== man pages: groff -man -ww, ERRORS against the header and errnos.c'
	@Support/check-man --errno-cases $(BUILD)/tests/errnos $(HEADER) $(MAN_PAGES)

check-swift:
	@echo '== swift test'
	$(SWIFT) test

# The archive lands in .build/plugins/Swift-DocC/outputs/CowMem.doccarchive.
docs:
	@echo '== swift package generate-documentation'
	$(SWIFT) package generate-documentation --target CowMem --warnings-as-errors

demo:
	$(SWIFT) run -c release cowmem-demo $(DEMO_ARGS)

# ---- Benchmark -------------------------------------------------------------

# A program that prints tables of medians, never part of `make test`: on a
# shared machine a timing bounds nothing. Benchmarks/README.md explains it.
# e.g. make bench BENCH_ARGS="--sizes 64,256,1024,4096 --reps 7"
BENCH_ARGS ?=
# The Swift comparison with Array, e.g. SWIFT_BENCH_ARGS="--size-mib 1024".
SWIFT_BENCH_ARGS ?=
# Changed pages, reset, save and load against memcmp, memcpy, write(2) and
# read(2), e.g. TRACK_BENCH_ARGS="--sizes 64,256,1024 --reps 9";
# `make bench-tracking` runs only that part.
TRACK_BENCH_ARGS ?=
# The steady-state loop (write k pages, snapshot, keep 8, 300 times) with
# cowmem against memcpy, copying only the changed pages and fork, e.g.
# STEADY_BENCH_ARGS="--sizes 1024 --rates 1 --max-seconds 300";
# `make bench-steady` runs only that part.
STEADY_BENCH_ARGS ?=
# CHAIN_BENCH_ARGS="--pages 10000 --depths 1000,10000" is the default.
CHAIN_BENCH_ARGS ?=
BENCH_DIR := $(BUILD)/bench
BENCH_PROGRAM := $(BENCH_DIR)/cowmem-bench
TRACK_BENCH_PROGRAM := $(BENCH_DIR)/cowmem-track-bench
BENCH_CSV := $(BENCH_DIR)/bench.csv
BENCH_PNG := $(BENCH_DIR)/bench.png
TRACK_BENCH_CSV := $(BENCH_DIR)/tracking.csv
STEADY_BENCH_PROGRAM := $(BENCH_DIR)/cowmem-steady-bench
CHAIN_BENCH_PROGRAM := $(BENCH_DIR)/cowmem-chain-bench
STEADY_BENCH_CSV := $(BENCH_DIR)/steady.csv
STEADY_BENCH_PNG := $(BENCH_DIR)/steady.png

.PHONY: bench bench-tracking bench-steady bench-chain
bench: $(BENCH_PROGRAM) $(TRACK_BENCH_PROGRAM) $(STEADY_BENCH_PROGRAM) $(CHAIN_BENCH_PROGRAM)
	$(BENCH_PROGRAM) --csv $(BENCH_CSV) $(BENCH_ARGS)
	@Benchmarks/chart.sh $(BENCH_CSV) $(BENCH_PNG)
	$(TRACK_BENCH_PROGRAM) --csv $(TRACK_BENCH_CSV) $(TRACK_BENCH_ARGS)
	$(STEADY_BENCH_PROGRAM) --csv $(STEADY_BENCH_CSV) $(STEADY_BENCH_ARGS)
	@Benchmarks/steady-chart.sh $(STEADY_BENCH_CSV) $(STEADY_BENCH_PNG)
	$(CHAIN_BENCH_PROGRAM) $(CHAIN_BENCH_ARGS)
	$(SWIFT) run -c release cowmem-swift-bench $(SWIFT_BENCH_ARGS)

bench-chain: $(CHAIN_BENCH_PROGRAM)
	$(CHAIN_BENCH_PROGRAM) $(CHAIN_BENCH_ARGS)

bench-tracking: $(TRACK_BENCH_PROGRAM)
	$(TRACK_BENCH_PROGRAM) --csv $(TRACK_BENCH_CSV) $(TRACK_BENCH_ARGS)

bench-steady: $(STEADY_BENCH_PROGRAM)
	$(STEADY_BENCH_PROGRAM) --csv $(STEADY_BENCH_CSV) $(STEADY_BENCH_ARGS)
	@Benchmarks/steady-chart.sh $(STEADY_BENCH_CSV) $(STEADY_BENCH_PNG)

$(BENCH_DIR)/%: Benchmarks/%.c Benchmarks/bench_util.h $(HEADER) $(LIB_STATIC)
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -ISources/CCowMem/include $(CFLAGS) \
		$(LDFLAGS) -o $@ $< $(LIB_STATIC) -lpthread -lm

# ---- Sanitizers, valgrind and the soak ---------------------------------------

# `make sanitize` builds the library and every C test with AddressSanitizer
# and UndefinedBehaviorSanitizer into $(BUILD)/asan and runs them, then the
# multi-threaded tests with ThreadSanitizer from $(BUILD)/tsan, with fewer
# operations. Each build is a `make tests` of its own with BUILD, CC and
# CFLAGS set, so instrumented objects never mix with the normal build.
# SANITIZE_CC picks the compiler (gcc or clang).
SANITIZE_CC ?= $(CC)
ASAN_BUILD := $(BUILD)/asan
TSAN_BUILD := $(BUILD)/tsan
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=all
TSAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allow_user_segv_handler=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# die_after_fork=0: the tests fork from threaded processes on purpose.
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:die_after_fork=0 \
	COWMEM_TEST_OPS=3000 COWMEM_TEST_ROUNDS=4 COWMEM_TEST_PERMUTATIONS=2
# Not threads: its part 3 clones a region while another thread writes it,
# a race the contract allows (it behaves as memcpy would) and the test
# checks; ThreadSanitizer reports every store of that writer, and even
# suppressed, the reports make the run crawl.
TSAN_TESTS := differential leaks bad_input hosted_server tracking engine_v2
TSAN_STRESS_SECONDS ?= 20

# `make valgrind` runs a few C tests under memcheck with fewer operations.
# valgrind does not know the userfaultfd system call, so the library falls
# back to its memfd backend there anyway; COWMEM_BACKEND=memfd says so.
VALGRIND ?= valgrind
VALGRIND_TESTS := leaks bad_input destroy_orders differential tracking
VALGRIND_ENV := COWMEM_BACKEND=memfd COWMEM_TEST_OPS=2000 COWMEM_TEST_ROUNDS=3 \
	COWMEM_TEST_PERMUTATIONS=1 \
	GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0:glibc.malloc.arena_max=1
VALGRIND_FLAGS := -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--error-exitcode=1 --suppressions=Support/valgrind.supp

# `make stress`: the soak in Tests/stress (not part of `make test`), for
# STRESS_SECONDS (default 120), e.g. make stress STRESS_SECONDS=600.
STRESS_SECONDS ?= 120
STRESS_ARGS ?=
STRESS_PROGRAM := $(BUILD)/stress/stress

.PHONY: sanitize sanitize-asan sanitize-tsan valgrind stress

sanitize:
	@failed=''; \
	$(MAKE) --no-print-directory sanitize-asan || failed="$$failed asan+ubsan"; \
	$(MAKE) --no-print-directory sanitize-tsan || failed="$$failed tsan"; \
	if [ -n "$$failed" ]; then echo "make sanitize: FAILED:$$failed"; exit 1; fi; \
	echo 'make sanitize: clean'

sanitize-asan:
	@echo '== C tests under AddressSanitizer and UndefinedBehaviorSanitizer ($(ASAN_BUILD))'
	@$(MAKE) --no-print-directory -s BUILD=$(ASAN_BUILD) CC='$(SANITIZE_CC)' \
		CFLAGS='$(ASAN_FLAGS)' LDFLAGS='-fsanitize=address,undefined' tests
	@$(ASAN_ENV) Support/run-c-tests $(TEST_SOURCES:Tests/c/%.c=$(ASAN_BUILD)/tests/%)

sanitize-tsan:
	@echo '== multi-threaded C tests and the soak under ThreadSanitizer ($(TSAN_BUILD))'
	@$(MAKE) --no-print-directory -s BUILD=$(TSAN_BUILD) CC='$(SANITIZE_CC)' \
		CFLAGS='$(TSAN_FLAGS)' LDFLAGS='-fsanitize=thread' \
		$(TSAN_TESTS:%=$(TSAN_BUILD)/tests/%) $(TSAN_BUILD)/stress/stress
	@$(TSAN_ENV) STRESS_SECONDS=$(TSAN_STRESS_SECONDS) Support/run-c-tests \
		$(TSAN_TESTS:%=$(TSAN_BUILD)/tests/%) $(TSAN_BUILD)/stress/stress

valgrind: $(VALGRIND_TESTS:%=$(BUILD)/tests/%)
	@echo '== C tests under valgrind memcheck (memfd backend, fewer operations)'
	@if ! command -v $(VALGRIND) >/dev/null; then \
		echo 'valgrind: $(VALGRIND) is not installed'; exit 1; fi
	@failed=''; \
	for test in $(VALGRIND_TESTS); do \
		log=$(BUILD)/tests/$$test.valgrind.log; \
		if $(VALGRIND_ENV) $(VALGRIND) $(VALGRIND_FLAGS) $(BUILD)/tests/$$test \
			</dev/null >$$log 2>&1; then echo "PASS  $$test"; \
		else echo "FAIL  $$test; output:"; sed 's/^/      | /' $$log; \
			failed="$$failed $$test"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "make valgrind: FAILED:$$failed"; exit 1; fi; \
	echo 'make valgrind: clean'

stress: $(STRESS_PROGRAM)
	$(STRESS_PROGRAM) --seconds=$(STRESS_SECONDS) $(STRESS_ARGS)

$(STRESS_PROGRAM): Tests/stress/stress.c Tests/c/test_util.h $(LIB_STATIC)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -ITests/c $(LDFLAGS) -o $@ $< $(LIB_STATIC) -lpthread

# ---- Old kernels under QEMU -----------------------------------------------------

# `make test-kernels` (not part of `make test`): the C tests, linked
# statically, on Debian's own kernels booted under qemu-system-x86_64 (TCG)
# with a busybox-static initramfs, to prove the fallbacks on kernels that
# really lack the features (not only masked with COWMEM_DISABLE). The
# kernels (bookworm 6.1, bullseye 5.10) come from Debian's archive via apt
# and are cached in $(KERNEL_DIR). Needs qemu-system-x86, busybox-static and
# cpio; Documentation/backends.md describes it and the results.
# e.g. make test-kernels KERNEL_RELEASES=bullseye KERNEL_TESTS="differential fork"
KERNEL_DIR := $(BUILD)/kernels
KERNEL_RELEASES ?= bookworm bullseye
KERNEL_TEST_DIR := $(BUILD)/test-kernels
# Every C test as root, and the quick ones that reach the unprivileged
# paths again as nobody (backends.c already runs its own nobody cases).
KERNEL_TESTS ?= $(TEST_SOURCES:Tests/c/%.c=%)
KERNEL_NOBODY_TESTS ?= differential tracking fork errnos engine_v2 syscalls seals bad_input
# Seconds per program, and fewer operations than on the host: TCG runs
# the guest many times slower.
KERNEL_TEST_TIMEOUT ?= 300
KERNEL_TEST_ENV ?= COWMEM_TEST_OPS=300 COWMEM_TEST_ROUNDS=2 COWMEM_TEST_PERMUTATIONS=1 \
	COWMEM_TEST_ITERATIONS=60 COWMEM_TEST_FORKS=8
# MiB of guest memory (large_lending holds about 3.5 GiB) and seconds for
# a whole boot.
KERNEL_QEMU_MEMORY ?= 6144
KERNEL_QEMU_TIMEOUT ?= 1500
# Tests/kernels/*.c are probes of kernel behaviour the tests depend on, in
# the initramfs too but run only when named, e.g. KERNEL_TESTS=joinrace.
KERNEL_PROBE_SOURCES := $(sort $(wildcard Tests/kernels/*.c))
KERNEL_STATIC_TESTS := $(TEST_SOURCES:Tests/c/%.c=$(KERNEL_TEST_DIR)/tests/%) \
	$(KERNEL_PROBE_SOURCES:Tests/kernels/%.c=$(KERNEL_TEST_DIR)/tests/%)
KERNEL_INITRD := $(KERNEL_TEST_DIR)/initrd.gz

.PHONY: test-kernels
test-kernels: $(KERNEL_INITRD)
	@failed=''; \
	for release in $(KERNEL_RELEASES); do \
		kernel=$$(Support/fetch-kernel $(KERNEL_DIR) $$release) || \
			{ failed="$$failed $$release(fetch)"; continue; }; \
		QEMU_MEMORY=$(KERNEL_QEMU_MEMORY) QEMU_TIMEOUT=$(KERNEL_QEMU_TIMEOUT) \
		Support/test-kernels/boot $$release "$$kernel" $(KERNEL_INITRD) \
			$(KERNEL_TEST_DIR)/$$release.log || failed="$$failed $$release"; \
	done; \
	echo; \
	if [ -n "$$failed" ]; then echo "make test-kernels: FAILED:$$failed"; exit 1; fi; \
	echo 'make test-kernels: every kernel passed'

$(KERNEL_TEST_DIR)/tests/%: Tests/c/%.c $(LIB_STATIC)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(LDFLAGS) -static $(TEST_LDFLAGS_$*) -o $@ $< $(LIB_STATIC) -lpthread

$(KERNEL_TEST_DIR)/tests/%: Tests/kernels/%.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -O2 -static -o $@ $< -lpthread

$(KERNEL_TEST_DIR)/as-user: Support/test-kernels/as-user.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -O2 -static -o $@ $<

# The settings the guest's /init reads; rewritten only when they change.
KERNEL_CONF_TEXT := TESTS='$(KERNEL_TESTS)'|NOBODY_TESTS='$(KERNEL_NOBODY_TESTS)'|TIMEOUT=$(KERNEL_TEST_TIMEOUT)|export $(KERNEL_TEST_ENV)
ifneq ($(KERNEL_CONF_TEXT),$(shell cat $(KERNEL_TEST_DIR)/test-kernels.conf 2>/dev/null | tr '\n' '|' | sed 's/|$$//'))
.PHONY: $(KERNEL_TEST_DIR)/test-kernels.conf
endif
$(KERNEL_TEST_DIR)/test-kernels.conf:
	@mkdir -p $(@D)
	@echo "$(KERNEL_CONF_TEXT)" | tr '|' '\n' > $@

$(KERNEL_INITRD): Support/test-kernels/init Support/test-kernels/make-initramfs \
		$(KERNEL_TEST_DIR)/as-user $(KERNEL_TEST_DIR)/test-kernels.conf $(KERNEL_STATIC_TESTS)
	Support/test-kernels/make-initramfs $@ Support/test-kernels/init \
		$(KERNEL_TEST_DIR)/as-user $(KERNEL_TEST_DIR)/test-kernels.conf $(KERNEL_STATIC_TESTS)

# ---- Installation ----------------------------------------------------------

install: lib
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man3
	$(INSTALL) -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/cowmem.h
	$(INSTALL) -m 644 $(LIB_STATIC) $(DESTDIR)$(LIBDIR)/libcowmem.a
	$(INSTALL) -m 755 $(LIB_SHARED) $(DESTDIR)$(LIBDIR)/$(LIB_REAL)
	ln -sf $(LIB_REAL) $(DESTDIR)$(LIBDIR)/$(LIB_SONAME)
	ln -sf $(LIB_REAL) $(DESTDIR)$(LIBDIR)/libcowmem.so
	$(INSTALL) -m 644 $(PC) $(DESTDIR)$(PKGCONFIGDIR)/cowmem.pc
	$(if $(MAN_PAGES),$(INSTALL) -m 644 $(MAN_PAGES) $(DESTDIR)$(MANDIR)/man3/)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/cowmem.h $(DESTDIR)$(LIBDIR)/libcowmem.a \
		$(DESTDIR)$(LIBDIR)/libcowmem.so $(DESTDIR)$(LIBDIR)/$(LIB_SONAME) \
		$(DESTDIR)$(LIBDIR)/$(LIB_REAL) $(DESTDIR)$(PKGCONFIGDIR)/cowmem.pc \
		$(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(MAN_PAGES)))

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJECTS:.o=.d) $(TEST_PROGRAMS:=.d) $(EXAMPLE_PROGRAMS:=.d)
