#!/usr/bin/env bash
# The end-to-end demo on the embedded default (SQLite registry, Parquet + DuckDB offline
# store, SQLite online store): no server needed. Run it with `make demo`.
set -euo pipefail

DEMO_DIR=${DEMO_DIR:-demo-repo}
fl() { echo; echo "\$ featureledger $*"; featureledger "$@"; }
step() { echo; echo "==== $* ===="; }

rm -rf "$DEMO_DIR"
export COLUMNS=${COLUMNS:-160}

step "1. Scaffold a feature repository with deterministic sample data"
fl init "$DEMO_DIR"
export FEATURELEDGER_REPO="$DEMO_DIR"

step "2. Plan and apply the definitions (Python and YAML)"
fl plan
fl apply

step "3. Apply again: nothing changes"
fl apply

step "4. Change a definition: add a nullable field, loosen a range, document a field"
python - "$DEMO_DIR/drivers.py" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace('Field(name="rating", dtype="float64", min=1, max=5,',
              'Field(name="rating", dtype="float64", min=0, max=5,')
s = s.replace('        Field(name="vehicle_type", dtype="string",',
              '        Field(name="seats", dtype="int32", min=1, description="Passenger seats"),\n'
              '        Field(name="vehicle_type", dtype="string",')
open(p, "w").write(s)
PY
fl plan
fl apply

step "5. A breaking change is refused with the field, the change and the rule"
python - "$DEMO_DIR/drivers.py" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
open(p + ".orig", "w").write(s)
open(p, "w").write(s.replace('Field(name="conv_rate", dtype="float32", min=0, max=1,',
                             'Field(name="conv_rate", dtype="float32", min=0, max=0.9,'))
PY
fl apply || echo "(refused as expected, exit $?)"
mv "$DEMO_DIR/drivers.py.orig" "$DEMO_DIR/drivers.py"

step "6. List, show and compare versions"
fl list
fl show driver_stats
fl versions driver_stats
fl versions driver_stats --diff 1..2

echo
echo "Demo finished. The repository is in $DEMO_DIR/."
