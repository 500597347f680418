#!/usr/bin/env bash
# `make audit`: known vulnerabilities in the Python environment, pending Debian security
# updates in the images, and CycloneDX SBOMs of both. Needs the network (PyPI, the Debian
# mirror); never part of `make test`.
#
# Exit status: 1 if anything was FOUND (a vulnerable Python package, an image package
# with a pending security update); otherwise 0, also when a source could not be reached,
# which is printed as "NOT CHECKED: ..." (STRICT=1 turns that into exit 2, for a pipeline
# that must not pass unless everything was checked).
set -uo pipefail
PY=${PY:-.venv/bin/python}
AUDIT_VENV=${AUDIT_VENV:-.venv-audit}
OUT=${OUT:-build/audit}
STRICT=${STRICT:-0}
mkdir -p "$OUT"

found=0; unchecked=0
if [ ! -x "$AUDIT_VENV/bin/pip-audit" ] || ! cmp -s scripts/audit-requirements.txt "$AUDIT_VENV/.requirements"; then
    python3 -m venv "$AUDIT_VENV" && "$AUDIT_VENV/bin/pip" install -q --disable-pip-version-check \
        -r scripts/audit-requirements.txt 2>"$OUT/install.err" && cp scripts/audit-requirements.txt "$AUDIT_VENV/.requirements" \
        || { echo "audit: cannot install the pinned audit tools" >&2; exit 2; }
fi

echo "== Python packages (pip-audit, PyPI advisory data) of $PY"
PIPAPI_PYTHON_LOCATION="$(realpath "$PY")" "$AUDIT_VENV/bin/pip-audit" --skip-editable \
    --progress-spinner off -f json -o "$OUT/pip-audit.json" >/dev/null 2>"$OUT/pip-audit.err"
"$AUDIT_VENV/bin/python" - "$OUT/pip-audit.json" <<'PYEOF'
import json, sys
deps = json.load(open(sys.argv[1]))["dependencies"]
vulns = [(d["name"], d["version"], v["id"], v.get("fix_versions") or [])
         for d in deps for v in d.get("vulns", [])]
skipped = [d["name"] for d in deps if d.get("skip_reason")]
for name, version, vid, fixes in vulns:
    print(f"FOUND {name} {version}: {vid} (fixed in {', '.join(fixes) or 'no release yet'})")
if skipped:
    print(f"NOT CHECKED: {len(skipped)} of {len(deps)} packages (PyPI's advisory data could "
          f"not be fetched for them, e.g. {', '.join(skipped[:3])})")
print(f"{len(deps) - len(skipped)} packages checked, {len(vulns)} known vulnerabilities")
sys.exit(1 if vulns else (3 if skipped else 0))
PYEOF
case $? in 0) ;; 1) found=1 ;; 3) unchecked=1 ;; *) echo "NOT CHECKED: pip-audit failed (see $OUT/pip-audit.err)"; unchecked=1 ;; esac

echo "== images: pending Debian security updates"
"$PY" -m containers.supply_chain check --out "$OUT/images" ${AUDIT_IMAGES:+$(printf -- '--image %s ' $AUDIT_IMAGES)}
rc=$?
case $rc in 0) ;; 1) found=1 ;; *) unchecked=1 ;; esac
grep -q '"checked": false' "$OUT/images/debian-security.json" 2>/dev/null && unchecked=1

echo "== SBOMs (CycloneDX)"
"$AUDIT_VENV/bin/cyclonedx-py" environment --pyproject pyproject.toml --of JSON \
    -o "$OUT/project.cdx.json" "$PY" && echo "sbom project: $OUT/project.cdx.json" || unchecked=1
PYTHONPATH=. "$AUDIT_VENV/bin/python" -m containers.supply_chain sbom --out "$OUT/images" || unchecked=1

[ "$found" = 1 ] && { echo "audit: FOUND problems (above)"; exit 1; }
if [ "$unchecked" = 1 ]; then
    echo "audit: nothing found, but some sources were NOT CHECKED (above)"
    [ "$STRICT" = 1 ] && exit 2
fi
exit 0
