#!/usr/bin/env bash
# Set up distill for development: system packages, .venv, torch, the project.
# Idempotent: rerunning only installs what is missing.
#
#   bash scripts/setup.sh                 # system packages + .venv + torch + project[dev]
#   bash scripts/setup.sh --bench-data    # also the benchmark audio (sonic-pi-samples) and the
#                                         # benchmarks' own packages (the bench extra: ViSQOL)
#
# Environment:
#   DISTILL_BENCH_DATA=1     same as --bench-data
#   DISTILL_TORCH_SPEC=...   pip requirement for torch (default, on Linux x86_64 without
#                            an NVIDIA GPU: the CPU build from PyTorch's CPU index, else
#                            torch==2.13.0 from a CPU wheel pip has at hand; plain `torch`
#                            with nvidia-smi or on macOS)
#   PYTHON=python3.11        interpreter used to create .venv
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[setup] %s\n' "$*"; }

BENCH_DATA="${DISTILL_BENCH_DATA:-0}"
for arg in "$@"; do
    case "$arg" in
        --bench-data) BENCH_DATA=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

OS="$(uname -s)"
ARCH="$(uname -m)"

# ---------------------------------------------------------------- system packages
# libportaudio2: sounddevice; libsndfile1: soundfile; jackd2: test sound card (dummy
# driver) and JACK MIDI; liblo-tools: oscsend/oscdump; ffmpeg: decoding odd formats;
# supercollider-language (sclang) and puredata (pd -nogui): OSC peers in the tests; chromium and
# chromium-driver: the web page's tests (Selenium drives Debian's chromedriver, nothing is downloaded).
APT_PACKAGES=(libportaudio2 libsndfile1 jackd2 liblo-tools ffmpeg supercollider-language puredata chromium
              chromium-driver)
if [ "$BENCH_DATA" = "1" ]; then
    APT_PACKAGES+=(sonic-pi-samples)
fi

if [ "$OS" = "Darwin" ]; then
    say "macOS: install the system libraries with:"
    say "  brew install portaudio libsndfile jack liblo ffmpeg"
    say "(SuperCollider and Pure Data, used by some tests, come from their own installers.)"
elif command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "system packages: all present"
    else
        SUDO=()
        if [ "$(id -u)" -eq 0 ]; then
            SUDO=()
        elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo -n)
        else
            SUDO=(none)
        fi
        if [ "${SUDO[0]:-}" = "none" ]; then
            say "MISSING system packages (need root): sudo apt-get install ${missing[*]}"
        else
            say "installing system packages: ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            # jackd2 asks whether to enable realtime scheduling: answer no, without asking.
            echo "jackd2 jackd/tweak_rt_limits boolean false" | "${SUDO[@]}" debconf-set-selections 2>/dev/null || true
            APT_OPTS=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null \
                || { say "apt-get update failed"; exit 1; }
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" \
                --no-install-recommends "${missing[@]}" </dev/null >/tmp/distill-apt.log 2>&1 \
                || { tail -n 30 /tmp/distill-apt.log >&2; say "apt-get install failed (log: /tmp/distill-apt.log)"; exit 1; }
            say "system packages installed"
        fi
    fi
else
    say "not a Debian/Ubuntu system: install PortAudio, libsndfile, JACK 2, liblo tools, ffmpeg,"
    say "SuperCollider (sclang) and Pure Data with your package manager"
fi

# ---------------------------------------------------------------- virtualenv
if [ -z "${PYTHON:-}" ]; then
    for cand in python3.11 python3.12 python3; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON="$cand"
            break
        fi
    done
fi
if [ -z "${PYTHON:-}" ]; then
    say "no Python >= 3.11 found: install python3.11 and rerun"
    exit 1
fi

if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    say ".venv is broken (its interpreter does not run): recreating it"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
PYVER="$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$PYVER" in
    3.11|3.12) ;;
    *) say "warning: .venv uses Python $PYVER; python-rtmidi has wheels for 3.11 and 3.12 only (the MIDI tests need it)" ;;
esac

PIP=("$PY" -m pip install -qq --disable-pip-version-check --progress-bar off)

# ---------------------------------------------------------------- torch
# torch goes in first, so that the project's "torch>=2.3" is already satisfied and pip does not
# pull PyPI's torch, which on Linux x86_64 is the CUDA build (several GB), on a machine without a GPU.
CPU_INDEX="https://download.pytorch.org/whl/cpu"
LOCAL_CPU_TORCH="torch==2.13.0"  # the CPU wheel the project's CI machines keep at hand (pip find-links)
if [ -n "${DISTILL_TORCH_SPEC:-}" ]; then
    say "torch: $DISTILL_TORCH_SPEC (from DISTILL_TORCH_SPEC)"
    "${PIP[@]}" "$DISTILL_TORCH_SPEC"
elif "$PY" -c 'import torch' 2>/dev/null; then
    say "torch: $("$PY" -c 'import torch; print(torch.__version__)') already installed"
elif [ "$OS" = "Darwin" ]; then
    say "torch: from PyPI (macOS)"
    "${PIP[@]}" torch
elif command -v nvidia-smi >/dev/null 2>&1; then
    say "torch: nvidia-smi found, installing the CUDA build of torch (large download)"
    "${PIP[@]}" torch
elif [ "$OS" = "Linux" ] && [ "$ARCH" = "x86_64" ]; then
    if "$PY" -c "import sys, urllib.request; urllib.request.urlopen('$CPU_INDEX/torch/', timeout=10)" 2>/dev/null; then
        say "torch: the CPU build from PyTorch's CPU index ($CPU_INDEX)"
        "${PIP[@]}" torch --index-url "$CPU_INDEX"
    elif "${PIP[@]}" --no-index --no-deps "$LOCAL_CPU_TORCH" 2>/dev/null; then
        say "torch: PyTorch's CPU index cannot be reached; $LOCAL_CPU_TORCH from a CPU wheel pip has at hand"
        "${PIP[@]}" "$LOCAL_CPU_TORCH"  # its small dependencies
    else
        say "warning: PyTorch's CPU index cannot be reached and pip has no CPU wheel of torch at hand:"
        say "installing PyPI's torch, the CUDA build (several GB); to avoid it, install a CPU wheel first"
        "${PIP[@]}" torch
    fi
else
    say "torch: from PyPI ($OS $ARCH)"
    "${PIP[@]}" torch
fi

# ---------------------------------------------------------------- the project
if [ "$BENCH_DATA" = "1" ]; then
    say "installing distill (editable) with the dev and bench extras"
    "${PIP[@]}" -e ".[dev,bench]"
else
    say "installing distill (editable) with the dev extra"
    "${PIP[@]}" -e ".[dev]"
fi

$PY -c 'import torch, distill_live; print("[setup] ok: torch", torch.__version__, "| python", __import__("sys").version.split()[0])'
say "done. Activate with:  source .venv/bin/activate"
