#!/usr/bin/env bash
# The end-to-end demo on the embedded default (SQLite registry, Parquet + DuckDB offline
# store, SQLite online store): no server needed. Run it with `make demo`.
set -euo pipefail

# absolute: ingested files must lie inside the repository, and relative paths are read
# relative to it, not to the folder the demo runs in
DEMO_DIR=$(realpath -m "${DEMO_DIR:-demo-repo}")
fl() { echo; echo "\$ featureledger $*"; featureledger "$@"; }
step() { echo; echo "==== $* ===="; }

rm -rf "$DEMO_DIR"
export COLUMNS=${COLUMNS:-160}

step "1. Scaffold a feature repository with deterministic sample data"
fl init "$DEMO_DIR" --data-end today
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

step "7. Ingest: each file is one validated, attributed commit"
fl ingest driver_stats "$DEMO_DIR/data/driver_stats.parquet"
fl ingest customer_profile "$DEMO_DIR/data/customer_profile.parquet"

step "8. A bad batch is rejected whole, with a report per rule; nothing is written"
fl ingest driver_stats "$DEMO_DIR/data/driver_stats_bad.parquet" || echo "(rejected as expected, exit $?)"
fl commits

step "9. Build a point-in-time-correct training set and show its manifest"
echo "\$ featureledger historical $DEMO_DIR/data/entity_rows.parquet --feature-set ride_model_features --out $DEMO_DIR/training_v1.parquet"
featureledger historical "$DEMO_DIR/data/entity_rows.parquet" --feature-set ride_model_features \
  --out "$DEMO_DIR/training_v1.parquet" --json > "$DEMO_DIR/training_v1.json"
DS1=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['dataset_id'])" "$DEMO_DIR/training_v1.json")
fl datasets show "$DS1"

step "10. A late correction arrives; the first training set still reproduces bit for bit"
fl ingest driver_stats "$DEMO_DIR/data/driver_stats_late.parquet"
fl reproduce "$DS1" --out "$DEMO_DIR/training_v1_again.parquet"
featureledger historical "$DEMO_DIR/data/entity_rows.parquet" --feature-set ride_model_features \
  --out "$DEMO_DIR/training_v2.parquet" --json > "$DEMO_DIR/training_v2.json"
python - "$DEMO_DIR" <<'PY'
import json, sys
d = sys.argv[1]
a, b = (json.load(open(f"{d}/training_v{i}.json")) for i in (1, 2))
print(f"training set before the correction: {a['dataset_id']}  hash {a['content_hash'][:16]}")
print(f"training set after the correction:  {b['dataset_id']}  hash {b['content_hash'][:16]}"
      f"  (reads {len(b['commit_ids'])} commits)")
PY

step "11. Materialize to the online store and read a feature vector with statuses"
fl materialize-incremental
fl online get --feature-set ride_model_features -e driver_id=1001,customer_id=5001 -e driver_id=9999,customer_id=5002
fl online get -f driver_stats:conv_rate,driver_stats:rating -e driver_id=9999

step "12. Evolve a view that holds data: the new version carries it and serves it at once"
python - "$DEMO_DIR/drivers.py" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace('        Field(name="vehicle_type", dtype="string",',
              '        Field(name="pet_friendly", dtype="bool", default=False,\n'
              '              description="Accepts pets (known for new rows only)"),\n'
              '        Field(name="vehicle_type", dtype="string",')
open(p, "w").write(s)
PY
fl plan
fl apply
fl online get -f driver_stats:conv_rate,driver_stats:pet_friendly -e driver_id=1001
fl versions driver_stats

step "13. The same vector over HTTP"
PORT=${DEMO_PORT:-6577}
featureledger serve --port "$PORT" > "$DEMO_DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python - "$PORT" <<'PY'
import json, sys, time, urllib.request
port = sys.argv[1]
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
body = json.dumps({"feature_set": "ride_model_features",
                   "entities": {"driver_id": [1001], "customer_id": [5001]}}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/features/online", data=body,
                             headers={"Content-Type": "application/json"})
print(f"$ POST http://127.0.0.1:{port}/features/online  {body.decode()}")
resp = json.load(urllib.request.urlopen(req, timeout=5))
for f in resp["features"]:
    print(f"  {f['reference']:<36} value={f['values'][0]!r:<22} status={f['statuses'][0]:<12} "
          f"commit={f['commits'][0]}")
PY
kill $SERVER 2>/dev/null || true
trap - EXIT

step "14. Train, log, deploy and score a model in a run; lineage builds itself"
python scripts/demo_story.py "$DEMO_DIR"
DEP=$(cat "$DEMO_DIR/last_deployment")
fl lineage "$DEP" --direction upstream
fl lineage "$DEP" --format html --output "$DEMO_DIR/lineage.html"
fl reconcile

echo
echo "Demo finished. The repository is in $DEMO_DIR/."
echo "Lineage of deployment $DEP: $(cd "$DEMO_DIR" && pwd)/lineage.html"
