#!/usr/bin/env bash
# make pi-check: run the packaged edge runtime on 64-bit Raspberry Pi OS's
# userland (Debian bookworm arm64, Python 3.11) under QEMU user-mode
# emulation of a Pi 4's Cortex-A72, and compare its outputs with the same run
# on this machine (tools/pi_check.py does both runs and the comparison).
#
#   1. a minimal arm64 root filesystem: Debian's python3.11 and the libraries
#      it needs, fetched with apt through a private configuration (the host's
#      dpkg architectures are not touched) and unpacked with dpkg-deb -x;
#   2. the runtime's aarch64 wheels from PyPI (pip --platform ... --only-binary)
#      and the runtime itself, built as a wheel from edge_runtime/;
#   3. the same script on the host and under qemu-aarch64-static -cpu cortex-a72 -L ROOTFS.
#      Each run also starts `serve` in-process on 127.0.0.1 and asks it for /api/latest,
#      and runs the peers: ONNX Runtime (its own aarch64 wheel, in its own directory, never
#      the runtime's) on the ONNX export of the same Keras model, for agreement, not speed.
#      A peer that can't be installed or exported is reported, never a failure.
#
# Everything is cached under .cache/pi-check/<arch>/; each part is built in a
# .partial directory and renamed when complete, with a stamp naming what it was
# built from, so an interrupted build is redone and never half-used.
#
# Settings (environment):
#   PY          the host's Python with the project installed (default .venv/bin/python)
#   PI_MODEL    model to check (default models/fashion_mnist_int8.tflite)
#   PI_ARCH     aarch64 (default: 64-bit Pi OS) or armv7l (32-bit Pi OS, tflite-runtime 2.14)
#   PI_CPU      the emulated CPU (default cortex-a72, a Pi 4; cortex-a76 for a Pi 5)
#   PI_COUNT    how many Fashion-MNIST test images (default 200)
#   PI_PHOTOS   a directory of real photos to classify too (default ../shared/real-photos if present)
#   PI_PHOTO_LIMIT  at most this many of them, evenly spread over their sorted names (default 32; 0: all)
#   PI_STRICT=1 no tolerance at all (see tools/pi_check.py: the aarch64 int8 softmax)
#   PI_BATCH    the Classifier's batch size (default 64; 1 for armv7l)
#   PI_CACHE    cache directory (default .cache/pi-check)
#   PI_PEERS=0  don't run the peers (ONNX Runtime on the ONNX export of the same Keras model)
#   PI_PEERS_RUN_DIR  the training run PI_MODEL was converted from (default: runs/<the run its metadata names>)
#   PI_DEBIAN_MIRROR, PI_DEBIAN_SECURITY_MIRROR   override the Debian mirrors taken from the host's apt sources
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$SECONDS

PY=${PY:-.venv/bin/python}
ARCH=${PI_ARCH:-aarch64}
MODEL=${PI_MODEL:-models/fashion_mnist_int8.tflite}
COUNT=${PI_COUNT:-200}
PHOTO_LIMIT=${PI_PHOTO_LIMIT:-32}   # emulated, a photo takes ~0.3 s
CACHE=${PI_CACHE:-$ROOT/.cache/pi-check}
SUITE=bookworm            # Raspberry Pi OS 12 is Debian bookworm
PYVER=3.11                # bookworm's Python
RECIPE_VERSION=2          # bump to rebuild every cache after changing how they are built

say() { echo "pi-check: $*"; }
die() { echo "pi-check: error: $*" >&2; exit 1; }
elapsed() { echo "$((SECONDS - START))s"; }

case "$ARCH" in
    aarch64)
        DEB_ARCH=arm64 QEMU=qemu-aarch64-static CPU=${PI_CPU:-cortex-a72}
        # python3.11 and the C++ runtime the wheels link against (they bundle the rest).
        PACKAGES="python3.11-minimal libpython3.11-stdlib libstdc++6"
        # Pi OS bookworm has glibc 2.36: pip on the Pi accepts manylinux_2_17 .. 2_36.
        PLATFORMS="manylinux2014_aarch64 $(for v in $(seq 17 36); do printf 'manylinux_2_%s_aarch64 ' "$v"; done)"
        ;;
    armv7l)
        DEB_ARCH=armhf QEMU=qemu-arm-static CPU=${PI_CPU:-cortex-a15}
        # No cp311 armv7l wheels of numpy or opencv-python-headless exist: Debian's are used.
        PACKAGES="python3.11-minimal libpython3.11-stdlib libstdc++6 python3-numpy python3-opencv"
        PLATFORMS="manylinux2014_armv7l $(for v in $(seq 17 36); do printf 'manylinux_2_%s_armv7l ' "$v"; done)"
        ;;
    *) die "PI_ARCH=$ARCH is not supported: use aarch64 (64-bit Raspberry Pi OS) or armv7l (32-bit)" ;;
esac
WORK=$CACHE/$ARCH

# --------------------------------------------------------------- preflight
command -v "$QEMU" >/dev/null || die "$QEMU not found: apt-get install qemu-user-static"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "apt-get and dpkg-deb not found: the Pi's root filesystem is built from Debian packages (Debian/Ubuntu host needed)"
[ -x "$PY" ] || die "$PY not found: run 'make venv' first, or set PY to a Python with the project installed"
[ -f "$MODEL" ] || die "model $MODEL not found: run 'make train convert', or set PI_MODEL=path/to/model.tflite"
MODEL=$(realpath "$MODEL")
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || die "$KEYRING not found: apt-get install debian-archive-keyring"
DATA_DIR=$(PYTHONPATH=$ROOT "$PY" -c 'from edge_runtime import dataset; print(dataset.find_data_dir())' 2>/dev/null) \
    || die "Fashion-MNIST not found: run 'make data' (or set FASHION_MNIST_DIR)"
DATA_DIR=$(realpath "$DATA_DIR")
PHOTOS=${PI_PHOTOS:-}
if [ -z "$PHOTOS" ] && [ -d "$ROOT/../shared/real-photos" ]; then PHOTOS=$ROOT/../shared/real-photos; fi
[ -z "$PHOTOS" ] || [ -d "$PHOTOS" ] || die "PI_PHOTOS=$PHOTOS is not a directory"
[ -z "$PHOTOS" ] || PHOTOS=$(realpath "$PHOTOS")

mkdir -p "$WORK"
# One pi-check per architecture at a time (make and the test suite may overlap).
if command -v flock >/dev/null; then
    exec 9>"$WORK/.lock"
    flock -w 900 9 || die "another pi-check holds $WORK/.lock"
fi
PARTIALS=()
cleanup() { for p in "${PARTIALS[@]}"; do rm -rf "$p"; done; }
trap cleanup EXIT

hash_of() { printf '%s' "$1" | sha256sum | cut -c1-16; }
LOG=$WORK/last-build.log
run_logged() {  # run a command, its output to $LOG; on failure show the end of it
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 25 "$LOG" >&2
        die "failed: $* (full log: $LOG)"
    fi
}
retry_logged() {  # the same, up to three tries: mirrors are sometimes caught mid-sync
    local try
    for try in 1 2; do
        "$@" >>"$LOG" 2>&1 && return 0
        say "'$*' failed (try $try of 3), retrying in $((try * 10))s"
        sleep $((try * 10))
    done
    run_logged "$@"
}
: >"$LOG"

# ------------------------------------------------------- 1. root filesystem
debian_mirrors() {
    # The host's own Debian mirrors, as apt sees them (one-line and deb822
    # sources alike); deb.debian.org when the host is not Debian.
    local targets main="" security=""
    targets=$(apt-get indextargets --format '$(LABEL) $(REPO_URI)' 'Identifier: Packages' 2>/dev/null || true)
    main=$(awk '$1 == "Debian" {print $2; exit}' <<<"$targets")
    security=$(awk '$1 == "Debian-Security" {print $2; exit}' <<<"$targets")
    # Lists never fetched (no labels yet): recognise the archive by its path.
    [ -n "$main" ] || main=$(awk '{print $NF}' <<<"$targets" | grep -E '/debian/?$' | head -n1 || true)
    [ -n "$security" ] || security=$(awk '{print $NF}' <<<"$targets" | grep -E '/debian-security/?$' | head -n1 || true)
    MIRROR=${PI_DEBIAN_MIRROR:-${main:-http://deb.debian.org/debian/}}
    SECURITY_MIRROR=${PI_DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security/}}
}

apt_update() {  # apt-get update; a suite other than the main one whose index won't download is left out
    local apt=$1 try attempt=$1/update.log suite dropped=""
    for try in 1 2 3; do
        if apt-get -q -o APT::Update::Error-Mode=any update >"$attempt" 2>&1; then
            cat "$attempt" >>"$LOG"
            return 0
        fi
        cat "$attempt" >>"$LOG"
        if ! grep -q "Failed to fetch .*/dists/$SUITE/" "$attempt"; then
            for suite in "$SUITE-updates" "$SUITE-security"; do
                if grep -q "Failed to fetch .*/dists/$suite/" "$attempt"; then
                    sed -i "/ $suite main\$/d" "$apt/etc/sources.list"
                    dropped="$dropped $suite"
                fi
            done
        fi
        [ -z "$dropped" ] || break
        [ "$try" = 3 ] || { say "apt-get update failed (try $try of 3), retrying in $((try * 10))s"; sleep $((try * 10)); }
    done
    if [ -z "$dropped" ]; then
        tail -n 25 "$attempt" >&2
        die "apt-get update failed for Debian $SUITE $DEB_ARCH (full log: $LOG)"
    fi
    # Mirrors are sometimes caught mid-sync. Point releases still come from
    # $SUITE itself; this check is about the CPU, not about security fixes.
    say "warning: left out$dropped: its package index did not download" \
        "($(grep -m1 -oE 'File has unexpected size[^.]*|[0-9]{3} [A-Z][A-Za-z ]+' "$attempt" || echo 'see the log'))"
    run_logged apt-get -q -o APT::Update::Error-Mode=any update
}

build_rootfs() {
    local apt=$WORK/apt partial=$WORK/rootfs.partial
    rm -rf "$apt/etc" "$partial"
    mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/etc/apt.conf.d" "$apt/etc/preferences.d" \
             "$apt/etc/sources.list.d" "$apt/etc/trusted.gpg.d"
    : >"$apt/status"   # an empty dpkg database: apt resolves the whole dependency closure
    cat >"$apt/etc/sources.list" <<EOF
deb [arch=$DEB_ARCH signed-by=$KEYRING] $MIRROR $SUITE main
deb [arch=$DEB_ARCH signed-by=$KEYRING] $MIRROR $SUITE-updates main
deb [arch=$DEB_ARCH signed-by=$KEYRING] $SECURITY_MIRROR $SUITE-security main
EOF
    cat >"$apt/etc/apt.conf" <<EOF
APT::Architecture "$DEB_ARCH";
APT::Architectures { "$DEB_ARCH"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Get::AllowUnauthenticated "false";
Acquire::Languages "none";
Acquire::Retries "3";
Dir::State "$apt";
Dir::State::lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt";
Dir::Cache::archives "$apt/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Etc "$apt/etc";
Dir::Etc::SourceList "$apt/etc/sources.list";
Dir::Etc::SourceParts "$apt/etc/sources.list.d";
Dir::Etc::Parts "$apt/etc/apt.conf.d";
Dir::Etc::Preferences "$apt/etc/preferences";
Dir::Etc::PreferencesParts "$apt/etc/preferences.d";
Dir::Etc::TrustedParts "$apt/etc/trusted.gpg.d";
Dir::Log "$apt";
EOF
    # The host's proxy and validity settings, if any, apply to these downloads too.
    apt-config dump 2>/dev/null | grep -E '^Acquire::(https?|ftp)::Proxy|^Acquire::Check-Valid-Until' \
        >>"$apt/etc/apt.conf" || true
    # As root apt downloads as the _apt user, which may not reach this folder.
    if [ "$(id -u)" = 0 ]; then echo 'APT::Sandbox::User "root";' >>"$apt/etc/apt.conf"; fi
    export APT_CONFIG=$apt/etc/apt.conf
    say "fetching Debian $SUITE $DEB_ARCH package lists from $MIRROR and $SECURITY_MIRROR"
    apt_update "$apt"
    # Download-only install into the empty status: apt's own resolver picks
    # the dependency closure (versions, alternatives, security updates); no
    # list of ours can go stale.
    rm -f "$apt/archives/"*.deb
    retry_logged apt-get -q -y --download-only install $PACKAGES
    unset APT_CONFIG
    local debs=("$apt/archives/"*.deb)
    [ -e "${debs[0]}" ] || die "apt downloaded no packages (see $LOG)"
    say "unpacking ${#debs[@]} packages"
    PARTIALS+=("$partial")
    mkdir -p "$partial"
    for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$partial"; done
    ls "$apt/archives/"*.deb | xargs -n1 basename >"$partial/.packages"
    # Under -L, a file the guest opens is taken from ROOTFS when it exists
    # there, from the host otherwise. So the rootfs gets:
    mkdir -p "$partial/proc" "$partial/etc" "$partial/usr/local/lib/python$PYVER/dist-packages" \
             "$partial/usr/lib/python3/dist-packages"   # (empty site dirs: never the host's packages)
    : >"$partial/etc/ld.so.cache"                      # the loader must not read the host's cache
    cpuinfo >"$partial/proc/cpuinfo"                   # the interpreter reads it (the host's is x86's)
    # Maintainer scripts don't run, so the links update-alternatives would make
    # are missing: BLAS/LAPACK (numpy's, on armhf) live in subdirectories.
    local lib found triplet
    triplet=$(basename "$(dirname "$(find "$partial/usr/lib" "$partial/lib" -maxdepth 2 -name 'libc.so.6' | head -n1)")")
    for lib in libblas.so.3 liblapack.so.3; do
        found=$(cd "$partial/usr/lib/$triplet" && find . -mindepth 2 -maxdepth 2 -name "$lib" | sort | head -n1)
        if [ -n "$found" ] && [ ! -e "$partial/usr/lib/$triplet/$lib" ]; then ln -s "${found#./}" "$partial/usr/lib/$triplet/$lib"; fi
    done
    [ -x "$partial/usr/bin/python$PYVER" ] || die "no python$PYVER in the unpacked packages"
    rm -rf "$WORK/rootfs"
    mv "$partial" "$WORK/rootfs"
}

cpuinfo() {  # /proc/cpuinfo of a Raspberry Pi 4 Model B, as its 64-bit or 32-bit kernel shows it
    local i
    for i in 0 1 2 3; do
        if [ "$ARCH" = aarch64 ]; then
            printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\n'
        else
            printf 'processor\t: %s\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\n' "$i"
            printf 'Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n'
            printf 'CPU implementer\t: 0x41\nCPU architecture: 7\n'
        fi
        printf 'CPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done
    printf 'Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 100000000000cafe\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
}

debian_mirrors
ROOTFS_RECIPE="v$RECIPE_VERSION $SUITE $DEB_ARCH [$PACKAGES] $MIRROR $SECURITY_MIRROR $(cpuinfo | sha256sum | cut -c1-8)"
ROOTFS=$WORK/rootfs
if [ -f "$WORK/rootfs.stamp" ] && [ "$(cat "$WORK/rootfs.stamp")" = "$ROOTFS_RECIPE" ] && [ -d "$ROOTFS" ]; then
    say "root filesystem: cached ($ROOTFS)"
else
    rm -f "$WORK/rootfs.stamp"
    build_rootfs
    echo "$ROOTFS_RECIPE" >"$WORK/rootfs.stamp"
    say "root filesystem: built, $(du -sh "$ROOTFS" | cut -f1) ($(elapsed))"
fi

# ---------------------------------------------------------- 2. wheels
PIP=("$PY" -m pip --disable-pip-version-check --no-input)
PLATFORM_ARGS=()
for p in $PLATFORMS; do PLATFORM_ARGS+=(--platform "$p"); done
TARGET_ARGS=("${PLATFORM_ARGS[@]}" --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" --abi abi3 --abi none --only-binary=:all:)

# The runtime, as a wheel built from a clean copy of edge_runtime/ (a build in
# place would leave build/ and *.egg-info there). Cached by its sources' hash.
SRC_HASH=$(cd edge_runtime && find . -type f -not -path './build/*' -not -path '*.egg-info/*' \
           -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
           | sha256sum | cut -c1-16)
RUNTIME=$WORK/runtime-$SRC_HASH
if [ ! -f "$RUNTIME/.complete" ]; then
    say "building the runtime wheel from edge_runtime/"
    rm -rf "$RUNTIME" "$RUNTIME.partial" "$WORK/build"
    PARTIALS+=("$WORK/build" "$RUNTIME.partial")
    mkdir -p "$WORK/build/src"
    mkdir -p "$WORK/build/src/edge_runtime"
    tar -C edge_runtime --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.pyc' -cf - . \
        | tar -C "$WORK/build/src/edge_runtime" -xf -
    # pyproject asks setuptools>=68: use the host's when it is that new, else pip's isolated build.
    ISOLATION=()
    if "$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 68)' 2>/dev/null; then
        ISOLATION=(--no-build-isolation)
    fi
    run_logged "${PIP[@]}" wheel --no-deps "${ISOLATION[@]}" -w "$WORK/build/dist" "$WORK/build/src/edge_runtime"
    WHEEL=$(ls "$WORK/build/dist/"*.whl)
    run_logged "${PIP[@]}" install --no-deps --no-index --target "$RUNTIME.partial" "$WHEEL"
    cp "$WHEEL" "$RUNTIME.partial/"
    touch "$RUNTIME.partial/.complete"
    mv "$RUNTIME.partial" "$RUNTIME"
    rm -rf "$WORK/build"
    for old in "$WORK"/runtime-*; do [ "$old" = "$RUNTIME" ] || rm -rf "$old"; done
fi
WHEEL=$(ls "$RUNTIME"/*.whl)

# Its dependencies for the Pi, at the versions this machine runs (so the
# comparison is about the CPU, not about versions). Cached by what decides them.
if [ "$ARCH" = aarch64 ]; then
    # shellcheck disable=SC2016
    CONSTRAINTS=$("$PY" - <<'EOF'
from importlib import metadata
for name in ("numpy", "opencv-python-headless", "ai-edge-litert"):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
EOF
)
    REQUIREMENTS=("$WHEEL")   # the runtime's own declared dependencies
    DEPS_ARGS=()
    DEPS_NOTE="edge_runtime's dependencies"
else
    # 32-bit: numpy and OpenCV come from Debian (in the rootfs); tflite-runtime
    # 2.14 is the only interpreter with armv7l wheels, built for numpy 1.
    CONSTRAINTS=""
    REQUIREMENTS=("tflite-runtime==2.14.*")
    DEPS_ARGS=(--no-deps)     # its numpy requirement is met by Debian's python3-numpy
    DEPS_NOTE="tflite-runtime (numpy and OpenCV from Debian)"
fi
DEPS_RECIPE="v$RECIPE_VERSION $PYVER [$PLATFORMS] [$CONSTRAINTS] [${REQUIREMENTS[*]##*/}] $(sha256sum edge_runtime/pyproject.toml | cut -c1-16)"
SITE=$WORK/site-$(hash_of "$DEPS_RECIPE")
if [ ! -f "$SITE/.complete" ]; then
    say "downloading $DEPS_NOTE for $ARCH from PyPI"
    rm -rf "$SITE" "$SITE.partial"
    PARTIALS+=("$SITE.partial")
    printf '%s\n' "$CONSTRAINTS" >"$WORK/constraints.txt"
    run_logged "${PIP[@]}" download -d "$WORK/wheels" "${TARGET_ARGS[@]}" "${DEPS_ARGS[@]}" -c "$WORK/constraints.txt" "${REQUIREMENTS[@]}"
    run_logged "${PIP[@]}" install --no-index --find-links "$WORK/wheels" --target "$SITE.partial" "${TARGET_ARGS[@]}" \
        "${DEPS_ARGS[@]}" -c "$WORK/constraints.txt" "${REQUIREMENTS[@]}"
    # The runtime itself comes from $RUNTIME, fresh whenever its sources change.
    rm -rf "$SITE.partial"/edge_runtime "$SITE.partial"/fashion_edge_runtime-*.dist-info "$SITE.partial/bin"
    echo "$DEPS_RECIPE" >"$SITE.partial/.recipe"
    touch "$SITE.partial/.complete"
    mv "$SITE.partial" "$SITE"
    for old in "$WORK"/site-*; do [ "$old" = "$SITE" ] || rm -rf "$old"; done
    say "wheels: $(ls "$SITE" | grep -c '\.dist-info$') packages, $(du -sh "$SITE" | cut -f1) ($(elapsed))"
else
    say "wheels: cached ($SITE)"
fi

# The host side runs this machine's Python with the project (PY). For
# armv7l that has other versions of everything (ai-edge-litert 2.x, numpy 2,
# OpenCV 5) than the Pi (tflite-runtime 2.14, Debian's numpy 1.24 and OpenCV
# 4.6), so a venv with the Pi's versions makes the comparison like for like.
HOST_PY=$PY
BATCH=${PI_BATCH:-64}
if [ "$ARCH" = armv7l ]; then
    NUMPY_VERSION=$(ls "$ROOTFS/usr/lib/python3/dist-packages" | sed -n 's/^numpy-\([0-9.]*\)\.egg-info$/\1/p' | head -n1)
    OPENCV_VERSION=$(ls "$WORK/apt/archives" | sed -n 's/^python3-opencv_\([0-9.]*\)+.*/\1/p' | head -n1)
    [ -n "$NUMPY_VERSION" ] && [ -n "$OPENCV_VERSION" ] || die "can't tell Debian's numpy and OpenCV versions in $ROOTFS"
    HOST_REQS="numpy==$NUMPY_VERSION opencv-python-headless==$OPENCV_VERSION.* tflite-runtime==2.14.0"
    HOST_VENV=$WORK/host-venv-$(hash_of "v$RECIPE_VERSION $HOST_REQS $("$PY" -c 'import sys; print(sys.version)')")
    if [ ! -f "$HOST_VENV/.complete" ]; then
        say "a host venv with the Pi's versions: $HOST_REQS"
        rm -rf "$HOST_VENV" "$HOST_VENV.partial"
        PARTIALS+=("$HOST_VENV.partial")
        run_logged "$PY" -m venv "$HOST_VENV.partial"
        run_logged "$HOST_VENV.partial/bin/python" -m pip install --disable-pip-version-check -q $HOST_REQS
        touch "$HOST_VENV.partial/.complete"
        mv "$HOST_VENV.partial" "$HOST_VENV"   # venv scripts hard-code their path: only python -m is used
        for old in "$WORK"/host-venv-*; do [ "$old" = "$HOST_VENV" ] || rm -rf "$old"; done
    fi
    HOST_PY=$HOST_VENV/bin/python
    # Under qemu-arm, tflite-runtime 2.14's optimized kernels crash (SIGSEGV) once the
    # input is resized to a batch of 2 or more; one image at a time works.
    BATCH=${PI_BATCH:-1}
    [ "$BATCH" = 1 ] && say "warning: armv7l: classifying one image at a time (tflite-runtime 2.14 crashes on batches under qemu-arm; PI_BATCH=64 to see it)"
fi

# ---------------------------------------------------------- 3. the two runs
OUT=$WORK/out
rm -rf "$OUT"
mkdir -p "$OUT"

# The peers (benchmark-only): ONNX Runtime on the ONNX export of the Keras model PI_MODEL
# was converted from (python -m tools.peers models), on the same test images. Its wheels
# go into a directory of their own, on the guest's path after the runtime's: the device
# never depends on them. Whatever stops them is a note in the output, not a failure.
PEERS_ARGS=()
PEERS_PATH=""
peers_note() { PEERS_ARGS=(--peers_note "$1"); say "peers: not run: $1"; }
if [ "${PI_PEERS:-1}" = 0 ]; then
    peers_note "PI_PEERS=0"
elif ! ORT_VERSION=$("$PY" -c 'from importlib import metadata; print(metadata.version("onnxruntime"))' 2>/dev/null); then
    peers_note "onnxruntime is not installed on this machine (pip install -e '.[peers]')"
else
    PEERS_SITE=$WORK/peers-site-$(hash_of "v$RECIPE_VERSION $PYVER [$PLATFORMS] onnxruntime==$ORT_VERSION [$CONSTRAINTS]")
    PEERS_LOG=$WORK/peers-download.log
    if [ ! -f "$PEERS_SITE/.complete" ]; then
        say "downloading onnxruntime==$ORT_VERSION for $ARCH from PyPI (a benchmark peer, not the runtime's)"
        rm -rf "$PEERS_SITE" "$PEERS_SITE.partial"
        PARTIALS+=("$PEERS_SITE.partial")
        printf '%s\n' "$CONSTRAINTS" >"$WORK/peers-constraints.txt"
        if "${PIP[@]}" download -d "$WORK/peer-wheels" "${TARGET_ARGS[@]}" -c "$WORK/peers-constraints.txt" \
                "onnxruntime==$ORT_VERSION" >"$PEERS_LOG" 2>&1 \
           && "${PIP[@]}" install --no-index --find-links "$WORK/peer-wheels" --target "$PEERS_SITE.partial" \
                "${TARGET_ARGS[@]}" -c "$WORK/peers-constraints.txt" "onnxruntime==$ORT_VERSION" >>"$PEERS_LOG" 2>&1; then
            # numpy is the runtime's (earlier on the guest's path): not a second copy.
            rm -rf "$PEERS_SITE.partial"/numpy "$PEERS_SITE.partial"/numpy-*.dist-info "$PEERS_SITE.partial"/numpy.libs \
                   "$PEERS_SITE.partial/bin"
            touch "$PEERS_SITE.partial/.complete"
            mv "$PEERS_SITE.partial" "$PEERS_SITE"
            for old in "$WORK"/peers-site-*; do [ "$old" = "$PEERS_SITE" ] || rm -rf "$old"; done
        fi
        cat "$PEERS_LOG" >>"$LOG"
    fi
    if [ ! -f "$PEERS_SITE/.complete" ]; then
        peers_note "no onnxruntime==$ORT_VERSION for Python $PYVER on $ARCH from PyPI ($(grep -m1 '^ERROR' "$PEERS_LOG" || tail -n1 "$PEERS_LOG"))"
    elif ! TF_CPP_MIN_LOG_LEVEL=2 "$PY" -m tools.peers models --tflite "$MODEL" \
            ${PI_PEERS_RUN_DIR:+--run_dir "$PI_PEERS_RUN_DIR"} --data_dir "$DATA_DIR" --out "$OUT/peers" \
            >"$OUT/peers.log" 2>&1; then
        peers_note "no ONNX models of $(basename "$MODEL")'s Keras model: $(grep -m1 '^error:' "$OUT/peers.log" || tail -n1 "$OUT/peers.log")"
    else
        PEERS_ARGS=(--peers "$OUT/peers")
        PEERS_PATH=":$PEERS_SITE"
        say "peers: onnxruntime $ORT_VERSION on $(ls "$OUT/peers" | grep -c '\.onnx$') ONNX models of $(basename "$MODEL")'s Keras model ($(elapsed))"
    fi
fi

RUN_ARGS=(run --model "$MODEL" --count "$COUNT" --data_dir "$DATA_DIR" --batch_size "$BATCH" "${PEERS_ARGS[@]}")
[ -z "$PHOTOS" ] || RUN_ARGS+=(--photos "$PHOTOS" --photo_limit "$PHOTO_LIMIT")

say "host ($(uname -m)): classifying $COUNT test images$([ -z "$PHOTOS" ] || echo " and the photos in $PHOTOS") with $(basename "$MODEL")"
PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} TF_CPP_MIN_LOG_LEVEL=2 \
    "$HOST_PY" tools/pi_check.py "${RUN_ARGS[@]}" --out "$OUT/host.json" 2>"$OUT/host.log" \
    || { cat "$OUT/host.log" >&2; die "the host run failed"; }

say "emulated Pi ($QEMU -cpu $CPU, Debian $SUITE $DEB_ARCH, Python $PYVER): the same"
# A clean environment: nothing of the host's (LD_LIBRARY_PATH, PYTHON*) reaches the guest.
# Python is started by its full host path, so its own files (stdlib, Debian's
# dist-packages) are found by real paths under ROOTFS and never depend on -L,
# which qemu 7.2 does not apply everywhere (32-bit guests' statx ignores it).
T_PI=$SECONDS
env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 TMPDIR=/tmp PYTHONNOUSERSITE=1 \
    PYTHONPATH="$RUNTIME:$SITE$PEERS_PATH" \
    "$QEMU" -cpu "$CPU" -L "$ROOTFS" "$ROOTFS/usr/bin/python$PYVER" \
    "$ROOT/tools/pi_check.py" "${RUN_ARGS[@]}" --out "$OUT/pi.json" \
    --expect_machine "$ARCH" --forbid_tensorflow 2>"$OUT/pi.log" \
    || { cat "$OUT/pi.log" >&2; die "the emulated run failed"; }
say "emulated run took $((SECONDS - T_PI))s"
echo

COMPARE=(compare "$OUT/host.json" "$OUT/pi.json")
[ "${PI_STRICT:-0}" = 0 ] || COMPARE+=(--strict)
if "$PY" tools/pi_check.py "${COMPARE[@]}"; then
    say "done in $(elapsed) (results: $OUT)"
else
    die "the emulated Raspberry Pi ($ARCH) disagrees with this machine (results: $OUT)"
fi
