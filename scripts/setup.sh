#!/usr/bin/env bash
# Creates or reuses ./.venv and installs policygrad with what it needs. Sourced by scripts/run and
# scripts/test; safe to run again (it reinstalls only when pyproject.toml or constraints.txt change).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.policygrad-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # The constraints file pins the CPU build of torch; pyproject keeps an ordinary range for users.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$root/constraints.txt" -e "$root[dev]"
    echo "$want" > "$stamp"
fi
