#!/usr/bin/env bash
# The Label Studio round trip, against a real Label Studio (headless, SQLite):
#   export a run as a project (config.xml + tasks.json) -> create the project and import the tasks ->
#   check every task has its prediction, and screenshot the labelling page in headless Chromium ->
#   post reviews through the API (one corrected, one rejected untouched, one accepted as predicted) ->
#   export the project as JSON -> import-review it into gold -> eval the run against that gold.
#
#   scripts/labelstudio_roundtrip.sh RUN.jsonl PHOTO_ROOT OUT_DIR
#
# RUN.jsonl is a batch run made in PHOTO_ROOT (`cd PHOTO_ROOT && qvl-label batch . -o RUN.jsonl`).
#
# Needs `label-studio` (pip install label-studio; a venv of its own is wise: LS_BIN=/path/to/label-studio)
# and qvl-label with the dev extra (selenium) plus Debian's chromium and chromium-driver for the screenshot.
#
# Label Studio's first start migrates its database and collects static files: minutes on a loaded machine.
# The script polls its health endpoint (GET /health, every 2 s) until it answers, for at most LS_START_TIMEOUT
# seconds (default 900), and fails with the log's tail if Label Studio exits or the limit passes first.
set -euo pipefail
RUN=$(realpath "$1"); ROOT=$(realpath "$2"); OUT=$(realpath -m "$3")
LS_BIN=${LS_BIN:-label-studio}
QVL=${QVL:-qvl-label}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-8089}
LS_START_TIMEOUT=${LS_START_TIMEOUT:-900}
TOKEN=qvl-roundtrip-token
mkdir -p "$OUT"

# Run in PHOTO_ROOT: the run's relative paths are relative to where batch ran (here: the photo folder).
# Label Studio serves files from local storages that are subfolders of its LOCAL_FILES_DOCUMENT_ROOT (never
# the root itself): the document root is PHOTO_ROOT's parent, and --root names it.
DOC_ROOT=$(dirname "$ROOT")
(cd "$ROOT" && "$QVL" export "$RUN" --label-studio "$OUT/ls" --root "$DOC_ROOT")

DATA=$(mktemp -d)
# Legacy tokens are off for new organisations since Label Studio 1.18; this script's own throwaway
# instance turns them on so it can use a fixed token.
LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LABEL_STUDIO_BASE_DATA_DIR="$DATA" \
LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT="$DOC_ROOT" \
    "$LS_BIN" start --no-browser --port "$PORT" --username reviewer@example.com --password roundtrip-secret \
    --user-token "$TOKEN" >"$OUT/label-studio.log" 2>&1 &
LS_PID=$!
trap 'kill $LS_PID 2>/dev/null; wait $LS_PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
started=$SECONDS
until curl -sf --max-time 10 "http://127.0.0.1:$PORT/health" >/dev/null; do
    if ! kill -0 "$LS_PID" 2>/dev/null; then
        echo "Label Studio exited before it answered on /health; the end of $OUT/label-studio.log:" >&2
        tail -n 20 "$OUT/label-studio.log" >&2
        exit 1
    fi
    if (( SECONDS - started >= LS_START_TIMEOUT )); then
        echo "Label Studio did not answer on /health within LS_START_TIMEOUT=${LS_START_TIMEOUT}s" \
            "(raise it on a loaded machine); the end of $OUT/label-studio.log:" >&2
        tail -n 20 "$OUT/label-studio.log" >&2
        exit 1
    fi
    sleep 2
done
echo "Label Studio answered on /health after $((SECONDS - started)) s" >&2

"$PYTHON" - "$OUT" "$PORT" "$TOKEN" "$ROOT" <<'EOF'
import json, sys, urllib.error, urllib.request
from pathlib import Path

out, port, token, root = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
base = f"http://127.0.0.1:{port}"

def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {path}: {exc.code} {exc.read().decode()[:500]}") from None
    return json.loads(raw) if raw else None

config = (out / "ls/config.xml").read_text()
tasks = json.loads((out / "ls/tasks.json").read_text())
project = call("POST", "/api/projects", {"title": "qvl-label review", "label_config": config})
pid = project["id"]
# Label Studio serves /data/local-files/ only under a local-storage connection of the project (not synced:
# the tasks come from tasks.json, with our predictions).
call("POST", "/api/storages/localfiles", {"project": pid, "path": root, "title": "photos", "use_blob_urls": False})
call("POST", f"/api/projects/{pid}/import", tasks)
listed = call("GET", f"/api/tasks?project={pid}&page_size=1000&fields=all")
listed = listed["tasks"] if isinstance(listed, dict) else listed
with_predictions = sum(1 for t in listed if t.get("total_predictions", len(t.get("predictions") or [])) > 0)
print(f"project {pid}: {len(listed)} tasks imported, {with_predictions} with a prediction")
assert len(listed) == len(tasks) and with_predictions == len(tasks)

def prediction(task):
    full = call("GET", f"/api/tasks/{task['id']}")
    return full["predictions"][0]["result"]

first, second, third = sorted(listed, key=lambda t: t["id"])[:3]
corrected = [r for r in prediction(first) if r["from_name"] not in {"category", "colors"}]
corrected += [
    {"from_name": "category", "to_name": "image", "type": "taxonomy",
     "value": {"taxonomy": [["Food, Beverages & Tobacco", "Beverages", "Juice"]]}},
    {"from_name": "colors", "to_name": "image", "type": "choices", "value": {"choices": ["orange"]}},
    {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": ["accept"]}},
]
call("POST", f"/api/tasks/{first['id']}/annotations", {"result": corrected})
call("POST", f"/api/tasks/{second['id']}/annotations", {"result": prediction(second) + [
    {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": ["reject"]}}]})
call("POST", f"/api/tasks/{third['id']}/annotations", {"result": prediction(third) + [
    {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": ["accept"]}}]})
exported = call("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
(out / "export.json").write_text(json.dumps(exported, indent=1, ensure_ascii=False))
print(f"exported {len(exported)} tasks to {out / 'export.json'}; first task {first['id']} corrected")
(out / "first_task").write_text(str(first["id"]))
(out / "project").write_text(str(pid))
EOF

# The labelling page with the imported prediction, as a reviewer sees it.
"$PYTHON" - "$OUT" "$PORT" <<'EOF' || echo "screenshot skipped (selenium or chromium missing)"
import shutil, sys, time
from pathlib import Path
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

out, port = Path(sys.argv[1]), sys.argv[2]
options = Options()
options.binary_location = shutil.which("chromium")
for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
try:
    driver.get(f"http://127.0.0.1:{port}/user/login")
    driver.find_element(By.NAME, "email").send_keys("reviewer@example.com")
    driver.find_element(By.NAME, "password").send_keys("roundtrip-secret")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    time.sleep(3)
    project, task = (out / "project").read_text(), (out / "first_task").read_text()
    driver.get(f"http://127.0.0.1:{port}/projects/{project}/data?tab=0&task={int(task) + 2}")
    time.sleep(8)
    driver.save_screenshot(str(out / "labelstudio-task.png"))
    print(f"screenshot: {out / 'labelstudio-task.png'}")
finally:
    driver.quit()
EOF

"$QVL" import-review "$OUT/export.json" -o "$OUT/gold.jsonl"
(cd "$ROOT" && "$QVL" eval "$RUN" --gold "$OUT/gold.jsonl" --root "$ROOT" --worst 0)
