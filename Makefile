# A thin front door for those who type make; the work is in scripts/run and
# scripts/test (which need no make, for a fresh machine).
#   make run ARGS="--config my.json"    make test    make clean
BUILD_DIR ?= build
ARGS ?=
export BUILD_DIR

.PHONY: run test clean
run:
	sh scripts/run $(ARGS)
test:
	sh scripts/test
clean:
	rm -rf $(BUILD_DIR)
