# A thin front door over CMake. The two commands of the README:
#   make run    install what is missing, build, serve the built-in table on 127.0.0.1:8080
#   make test   install what is missing, build, run every test with ctest
# Knobs: BUILD_DIR (build), BUILD_TYPE (RelWithDebInfo), CMAKE_ARGS (extra -D...),
# ARGS (flags for the server with `make run`, e.g. ARGS="--config my.json").

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE_ARGS ?=
ARGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build run test clean

all: build

build:
	@sh scripts/deps.sh build
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DBUILD_TESTING=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/embedding-server $(ARGS)

test:
	@sh scripts/deps.sh test
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DBUILD_TESTING=ON $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD_DIR)
