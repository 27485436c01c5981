"""The README's role table (Deploying to Google Cloud, step 2) against the permissions
each feature calls (templates/iam/permissions.json) and the commands that grant them:
enough for every feature, nothing broad, nothing unused."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERMISSIONS = json.loads((ROOT / "templates" / "iam" / "permissions.json").read_text())


def role_table() -> list:
    rows = []
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `(\w+_SA)` \| `([^`]+)` \| (.+?) \| (.+?) \|$", line)
        if m:
            account, role, on, needed = m.groups()
            features = re.findall(r"\b([a-z]+(?:_[a-z]+)+)\b", needed.split("(")[0])
            rows.append({"account": account, "role": role, "on": on, "features": features})
    return rows


def test_the_table_exists_and_names_known_roles_and_features():
    rows = role_table()
    assert len(rows) >= 8
    for r in rows:
        assert r["role"] in PERMISSIONS["roles"], r
        assert r["features"], r
        for f in r["features"]:
            assert f in PERMISSIONS["features"], (r["role"], f)
            assert PERMISSIONS["features"][f]["account"] == r["account"], (r["role"], f)


def test_every_feature_gets_every_permission_it_calls():
    granted = {}
    for r in role_table():
        granted.setdefault(r["account"], set()).update(PERMISSIONS["roles"][r["role"]])
    for name, feature in PERMISSIONS["features"].items():
        missing = set(feature["permissions"]) - granted.get(feature["account"], set())
        assert not missing, f"{feature['account']} lacks {sorted(missing)} for {name}"


def test_each_role_is_needed_and_none_is_broad():
    for r in role_table():
        assert r["role"] not in PERMISSIONS["too_broad"], r["role"]
        assert not r["role"].endswith((".admin", ".editor")), r["role"]
        perms = set(PERMISSIONS["roles"][r["role"]])
        for f in r["features"]:
            # the row's role grants something the feature calls
            assert perms & set(PERMISSIONS["features"][f]["permissions"]), (r["role"], f)
    # the tracking subscriptions come from the custom role, not roles/pubsub.editor
    assert any(r["role"].endswith("/roles/shopstreamPubsubTracking") and
               "pubsub_tracking_subscriptions" in r["features"] for r in role_table())


def test_custom_role_file_grants_exactly_the_mapped_permissions():
    text = (ROOT / "templates" / "iam" / "shopstream-pubsub-tracking.yaml").read_text()
    included = re.findall(r"^- (\S+)$", text, re.M)
    assert sorted(included) == sorted(
        PERMISSIONS["roles"]["projects/GCP_PROJECT/roles/shopstreamPubsubTracking"])


def test_the_readme_commands_grant_exactly_the_table():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### 2. Bucket, service accounts"):readme.index("### 3. Pub/Sub")]
    commands = re.sub(r"\\\n\s*", " ", section)
    grants = set()
    for line in commands.splitlines():
        m = re.search(r'--member="serviceAccount:\$(\w+)".*--role="?([^"\s]+)', line)
        if m:
            grants.add((m.group(1), m.group(2).replace("$GCP_PROJECT", "GCP_PROJECT")))
    table = {(r["account"], r["role"]) for r in role_table()}
    assert grants == table, (grants ^ table)
