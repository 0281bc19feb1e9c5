"""Access policy commands: policy show, history, explain, token-hash, migrate-tokens.

The policy itself is applied with ``featureledger plan`` / ``apply`` (``policy.yaml`` next to
featureledger.yaml), like definitions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from featureledger.cli.common import (
    JsonOption,
    RepoOption,
    console,
    open_store,
    print_json,
    table,
)
from featureledger.cli.common import show as show_value

policy_app = typer.Typer(help="The access policy: principals, roles, permissions, tokens.",
                         no_args_is_help=True)


def _summary(spec: dict[str, Any]) -> dict[str, Any]:
    """The policy without its token hashes (counted instead)."""
    principals = {who: {**{k: v for k, v in p.items() if k != "tokens"},
                        "tokens": len(p.get("tokens") or [])}
                  for who, p in spec.get("principals", {}).items()}
    return {**spec, "principals": principals}


@policy_app.command("show")
def show_policy(repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
    """The access policy in force (tokens are counted, never shown)."""
    with open_store(repo) as store:
        rec = store.policy()
    if rec is None:
        if as_json:
            print_json(None)
        else:
            console.print("No access policy is applied: access is open. Write policy.yaml "
                          "and run 'featureledger apply' to enforce one.")
        return
    spec = _summary(rec.spec)
    if as_json:
        print_json({"version": rec.version, "policy_hash": rec.policy_hash,
                    "created_by": rec.created_by, **spec})
        return
    console.print(f"access policy version {rec.version} ({rec.policy_hash[:12]}), applied by "
                  f"{show_value(rec.created_by)}")
    t = table("principal", "roles", "regions", "tokens", title="principals")
    for who, p in spec["principals"].items():
        t.add_row(show_value(who), ", ".join(p["roles"]) or "-",
                  ", ".join(p["regions"]) or "-", str(p["tokens"]))
    console.print(t)
    r = table("role", "effect", "actions", "resources", title="roles")
    for role, perms in spec["roles"].items():
        for perm in perms:
            given = {k: v for k, v in perm["resources"].items() if v != "*"}
            r.add_row(show_value(role), perm["effect"], ", ".join(perm["actions"]),
                      show_value(", ".join(f"{k}={v}" for k, v in given.items()) or "*"))
    console.print(r)


@policy_app.command("history")
def history(repo: Path = RepoOption, as_json: bool = JsonOption) -> None:
    """Every applied version of the access policy, oldest first."""
    with open_store(repo) as store:
        recs = store.registry.policies.history()
    if as_json:
        print_json([{"version": r.version, "policy_hash": r.policy_hash,
                     "created_at": r.created_at, "created_by": r.created_by}
                    for r in recs])
        return
    t = table("version", "hash", "applied by", "principals", "roles",
              title="access policy versions", ids=("hash",))
    for r in recs:
        t.add_row(str(r.version), r.policy_hash[:12], show_value(r.created_by),
                  str(len(r.spec.get("principals", {}))), str(len(r.spec.get("roles", {}))))
    console.print(t)


@policy_app.command("explain")
def explain(
    action: str = typer.Argument(..., help="read_offline, read_online, write, apply, "
                                           "deprecate, quarantine or admin."),
    resource: str = typer.Argument(..., help="VIEW:FEATURE, VIEW[@N] (the whole view) or "
                                             "'policy'."),
    principal: str = typer.Option(None, "--principal", "-p",
                                  help="Who asks (default: who this command runs as)."),
    repo: Path = RepoOption,
) -> None:
    """Whether the policy in force lets a principal do an action on a resource, and why
    (a dry run: nothing is audited)."""
    from featureledger.model.references import parse_reference

    with open_store(repo) as store:
        access = store.access
        rec = store.policy()
        who = principal or access.principal()
        if rec is None:
            console.print(f"allowed: no access policy is applied, so {who!r} may do anything")
            return
        if resource == "policy":
            res = access.policy_resource()
        elif ":" in resource:
            ref = parse_reference(resource)
            view = store.get_view(ref.view, ref.version).definition
            view.require_feature(ref.feature)
            res = access.feature_resources(view, [ref.feature])[0]
        else:
            name, _, ver = resource.partition("@")
            res = access.object_resource(store.get_view(name, int(ver) if ver else None)
                                         .definition)
        decision = access.explain(who, action, res)
    verdict = "[green]allowed[/]" if decision.allowed else "[red]denied[/]"
    console.print(f"{verdict}: {show_value(who)} {action} {show_value(res.describe())} "
                  f"(policy version {rec.version})"
                  + ("" if decision.allowed else f": {show_value(decision.reason)}"))
    if not decision.allowed:
        raise typer.Exit(1)


@policy_app.command("token-hash")
def token_hash(
    stdin: bool = typer.Option(False, "--stdin",
                               help="Hash the token read from standard input (one line) "
                                    "instead of making a new one."),
) -> None:
    """The salted hash of a bearer token, for a principal's 'tokens' in policy.yaml.

    Without --stdin a new random token is made and printed once, with its hash: give the
    token to the client and keep only the hash. A token is never an argument (it would
    stay in the shell's history)."""
    from featureledger.governance.tokens import MIN_TOKEN_CHARS, hash_token, new_token

    if stdin:
        token = sys.stdin.readline().strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise typer.BadParameter(f"the token read from standard input has {len(token)} "
                                     f"characters; use at least {MIN_TOKEN_CHARS} (or let "
                                     "this command make one: run it without --stdin)")
        console.print(hash_token(token), soft_wrap=True, highlight=False)
        return
    token = new_token()
    console.print(f"token (give it to the client; it is not stored): {token}",
                  soft_wrap=True, highlight=False)
    console.print(f"hash (for policy.yaml): {hash_token(token)}", soft_wrap=True,
                  highlight=False)


@policy_app.command("migrate-tokens")
def migrate_tokens(repo: Path = RepoOption) -> None:
    """Move the plain-text tokens of server.tokens into policy.yaml as salted hashes.

    Each token's principal gets its hash under 'tokens' (a principal the policy does not
    have yet is added without roles: give it some). Then run 'featureledger apply' and
    remove server.tokens from featureledger.yaml. Comments in policy.yaml are not kept."""
    import yaml

    from featureledger.config import load_config
    from featureledger.governance.policy import POLICY_FILE
    from featureledger.governance.tokens import hash_token

    cfg = load_config(repo)
    plain = cfg.server.tokens
    if not plain:
        console.print("server.tokens is empty: nothing to migrate")
        return
    file = cfg.root / POLICY_FILE
    data: dict[str, Any] = (yaml.safe_load(file.read_text()) or {}) if file.exists() else {}
    principals = data.setdefault("principals", {})
    added = []
    for token, who in plain.items():
        entry = principals.setdefault(who, {})
        if who not in added and not entry.get("roles"):
            added.append(who)
        entry.setdefault("tokens", []).append(hash_token(token))
    data.setdefault("roles", {})
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    console.print(f"wrote {len(plain)} token hash(es) for {len(set(plain.values()))} "
                  f"principal(s) into {file}")
    if added:
        console.print(f"principal(s) without roles: {', '.join(added)}; give them roles "
                      "before applying", highlight=False)
    console.print("next: featureledger plan; featureledger apply; then remove server.tokens "
                  "from featureledger.yaml")


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
