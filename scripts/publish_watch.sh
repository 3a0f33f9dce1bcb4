#!/usr/bin/env bash
# Publish each finished run of long sweeps the moment it finishes, regenerate the tables and commit them, so that
# nothing published depends on a run folder that can vanish with the machine (docs/guide/publishing.md).
#
#   nohup scripts/publish_watch.sh outputs/sweeps/study_fp32_cpu:results/study-fp32-cpu \
#       outputs/sweeps/running_bn_fp32_cpu:results/study-running_bn-fp32-cpu > publish_watch.log 2>&1 &
#
# A pair's sweep may be a glob in quotes ('outputs/sweeps/study_fp32_cpu*:results/study-fp32-cpu'): it is expanded at
# every pass, so sweeps started later (scripts/study_stretch.py starts one per run) are published too.
# Every INTERVAL seconds (default 300): `bloodcls publish <sweep> <footing>` for each pair, then, when a record is
# new (or training.json says another run started), `bloodcls tables` and a commit of results/ and the generated
# pages only (nothing else in the checkout). ONCE=1 makes one pass and exits.
set -uo pipefail
cd "$(dirname "$0")/.."
BLOODCLS=${BLOODCLS:-.venv/bin/bloodcls}
INTERVAL=${INTERVAL:-300}
# One pass: publish every pair, then commit the footings and their generated pages when something changed.
publish_once() {
  local footings=() pair new pages
  for pair in "$@"; do
    for sweep in ${pair%%:*}; do  # a glob (quoted on the command line) takes each matching sweep as it appears
      [ -d "$sweep" ] && { "$BLOODCLS" publish "$sweep" "${pair##*:}" > /dev/null 2>&1 || true; }
    done
    [ -d "${pair##*:}" ] && footings+=("${pair##*:}")  # a footing exists once its first run is published
  done
  [ ${#footings[@]} -eq 0 ] && return
  # only the footings this watcher publishes to: other files under results/ are someone else's to commit
  [ -z "$(git status --porcelain -- "${footings[@]}")" ] && return
  # a page edited by hand and not yet committed would go into this commit with the tables: wait for its commit
  if [ -n "$(git status --porcelain -- README.md docs)" ]; then
    echo "$(date -u +%FT%TZ) waiting: README.md or docs/ has uncommitted edits"; return
  fi
  "$BLOODCLS" tables
  new=$(git status --porcelain --untracked-files=all -- "${footings[@]}" | grep -o '[^/]*_s[0-9]*\.json' | sed 's/\.json//' | sort | tr '\n' ' ')
  new=${new:-"which runs are training "}  # only training.json changed: a run started
  git add -- "${footings[@]}"
  pages=$(git status --porcelain -- README.md docs | awk '{print $2}' | xargs -r grep -l "<!-- table:")
  # shellcheck disable=SC2086  # $pages: one word per page
  git commit -q -m "Published: ${new}(bloodcls publish + bloodcls tables, by scripts/publish_watch.sh)" -- "${footings[@]}" $pages \
    && echo "$(date -u +%FT%TZ) committed ${new}"
}

while true; do
  publish_once "$@"
  [ -n "${ONCE:-}" ] && break  # ONCE=1: one pass and out (the tests)
  sleep "$INTERVAL"
done
