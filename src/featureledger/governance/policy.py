"""The access policy: principals, roles and permissions, read from ``policy.yaml``.

A policy file sits next to ``featureledger.yaml`` and is applied with ``plan``/``apply``
like definitions: versioned in the registry, diffed in the plan, audited. Without an
applied policy access is open, as before; once one is applied everything is denied that it
does not grant (deny by default), on every path (SDK, CLI, HTTP server)::

    principals:
      alice:   {roles: [analyst], regions: [eu]}          # may read data resident in eu
      svc-api: {roles: [serving], regions: ["*"], tokens: ["pbkdf2_sha256$..."]}
    roles:
      analyst:
        - actions: [read_offline, read_online]
          resources: {name: "driver_stats:*"}             # every feature of driver_stats
        - actions: ["*"]
          resources: {tag: pii}
          effect: deny                                    # a deny wins over any allow
      serving:
        - actions: [read_online, write]

A permission grants (or, with ``effect: deny``, takes away) ``actions`` on the resources its
selector matches; every key given must match (keys left out match anything):

* ``name``: a glob over ``view:feature`` (``driver_*:*``), or over the view name when it has
  no ``:`` (then every feature of matching views). Entities, feature sets and the policy
  itself are named by their name (the policy is ``policy``).
* ``tag``: a tag key (``pii``) or ``key=value``, of the feature or of its view.
* ``owner``, ``project``, ``region``: globs over the view's owner, the project and the
  resource's region.

Actions: ``read_offline`` (training sets, windows, reproduce, datasets), ``read_online``,
``write`` (ingest, push, materialize, derive), ``apply``, ``deprecate``, ``quarantine``
(also rollback and restore), ``admin`` (the policy itself, gc); ``"*"`` is every action.

**Residency.** A feature's region is its tag ``region`` (or its view's); a principal reads
(``read_offline``/``read_online``) a resource with a region only if that region is among
its ``regions`` (``"*"``: every region), whatever its roles grant.

**Tokens** are salted hashes only (``featureledger policy token-hash``); a token in plain
text is refused when the policy loads. Principals and permissions are evaluated by PyCasbin
(an RBAC model with deny-override effect, below); the policy is compiled once per version.

>>> p = Policy.model_validate({
...     "principals": {"ana": {"roles": ["reader"], "regions": ["eu"]},
...                    "ops": {"roles": ["root"]}},
...     "roles": {"reader": [{"actions": ["read_offline"], "resources": {"name": "trips:*"}},
...                         {"actions": ["*"], "resources": {"tag": "pii"}, "effect": "deny"}],
...               "root": [{"actions": ["admin"]}]}})
>>> c = p.compile()
>>> c.decide("ana", "read_offline", Resource("trips", "km")).allowed
True
>>> c.decide("ana", "read_offline", Resource("trips", "name", tags=("pii",))).reason
"denied by role 'reader': deny * on {tag: pii}"
>>> c.decide("ana", "read_offline", Resource("trips", "km", region="us")).reason
"residency: the resource is in region 'us'; 'ana' may read from eu"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from featureledger.errors import ConfigError, MissingDependencyError
from featureledger.governance.tokens import is_token_hash

POLICY_FILE = "policy.yaml"
ACTIONS = ("read_offline", "read_online", "write", "apply", "deprecate", "quarantine", "admin")
READS = frozenset({"read_offline", "read_online"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
ROLE_PREFIX = "role:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(_Strict):
    """Which resources a permission covers; every key given must match."""

    name: str = "*"
    """Glob over ``view:feature``, or over the view name when it has no ``:``."""
    tag: str = "*"
    """A tag key (``pii``) or ``key=value`` of the feature or its view."""
    owner: str = "*"
    """Glob over the view's owner."""
    project: str = "*"
    """Glob over the project."""
    region: str = "*"
    """Glob over the resource's region."""

    def describe(self) -> str:
        given = {k: v for k, v in self.model_dump().items() if v != "*"}
        return "{" + ", ".join(f"{k}: {v}" for k, v in given.items()) + "}" if given \
            else "everything"


class Permission(_Strict):
    actions: list[str]
    """Actions granted (or denied): read_offline, read_online, write, apply, deprecate,
    quarantine, admin, or ``*``."""
    resources: Selector = Field(default_factory=Selector)
    effect: Literal["allow", "deny"] = "allow"

    @field_validator("actions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a != "*" and a not in ACTIONS]
        if bad or not v:
            raise ValueError(f"unknown action(s) {bad or '(none given)'}; use "
                             f"{', '.join(ACTIONS)} or '*'")
        return v

    def describe(self) -> str:
        return f"{self.effect} {', '.join(self.actions)} on {self.resources.describe()}"


class Principal(_Strict):
    roles: list[str] = Field(default_factory=list)
    """Roles whose permissions the principal holds."""
    regions: list[str] = Field(default_factory=list)
    """Regions whose data the principal may read (``*``: any); data without a region is
    readable by anyone granted it."""
    tokens: list[str] = Field(default_factory=list)
    """Salted hashes of the principal's bearer tokens (``featureledger policy token-hash``)."""
    description: str = ""

    @field_validator("tokens")
    @classmethod
    def _hashed(cls, v: list[str]) -> list[str]:
        for t in v:
            if not is_token_hash(t):
                raise ValueError(
                    "a token must be stored as a salted hash, never in plain text; replace "
                    "it with the output of 'featureledger policy token-hash' (the hash "
                    "begins with 'pbkdf2_sha256$')")
        return v


class Policy(_Strict):
    """An access policy (see the module docstring)."""

    format: Literal[1] = 1
    """Version of this file's format."""
    principals: dict[str, Principal] = Field(default_factory=dict)
    roles: dict[str, list[Permission]] = Field(default_factory=dict)

    @field_validator("principals", "roles")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not _NAME_RE.match(name):
                raise ValueError(f"name {name!r} is not valid; use up to 128 letters, digits, "
                                 "'_', '.', '@', ':' or '-', starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        for who, p in self.principals.items():
            missing = [r for r in p.roles if r not in self.roles]
            if missing:
                raise ValueError(f"principal {who!r} has role(s) {missing} that the policy "
                                 f"does not define; define them under roles (defined: "
                                 f"{', '.join(sorted(self.roles)) or 'none'})")
        seen: dict[str, str] = {}
        for who, p in self.principals.items():
            for t in p.tokens:
                if t in seen:
                    raise ValueError(f"principals {seen[t]!r} and {who!r} share a token hash; "
                                     "give each principal its own tokens")
                seen[t] = who
        if self.principals and not any(self.may_admin(who) for who in self.principals):
            raise ValueError("no principal may administer this policy (no role allows "
                             "'admin'); grant it to someone, or nobody could change the "
                             "policy again")
        return self

    def may_admin(self, who: str) -> bool:
        """Whether ``who`` holds a role that allows ``admin`` (on some resource)."""
        p = self.principals.get(who)
        return p is not None and any(
            perm.effect == "allow" and ("admin" in perm.actions or "*" in perm.actions)
            for r in p.roles for perm in self.roles[r])

    def to_spec(self) -> dict[str, Any]:
        """The canonical document stored in the registry."""
        return self.model_dump(mode="json")

    def compile(self) -> CompiledPolicy:
        """The policy as an engine ready to decide (built once per policy version)."""
        return CompiledPolicy(self)


def load_policy_file(path: Path) -> Policy | None:
    """The policy in ``path`` (a file, or a folder holding ``policy.yaml``), None if absent."""
    file = path / POLICY_FILE if path.is_dir() else path
    if not file.exists():
        return None
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from None
    return parse_policy(data, str(file))


def parse_policy(data: Any, where: str = "the policy") -> Policy:
    """A Policy from its document, or a ConfigError naming each problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping (principals, roles), not "
                          f"{type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'policy'}: "
                             f"{e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigError(f"invalid access policy in {where}: {problems}") from None


# -- plan: what changes between two policies ----------------------------------------------------
def diff_policies(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """The changes from ``old`` to ``new`` (policy documents), one dict each: ``change``
    (principal_added, principal_removed, principal_changed, role_added, role_removed,
    role_changed), ``field`` (the name) and ``detail``. Tokens are counted, never shown."""
    old = old or {}
    out: list[dict[str, Any]] = []
    for section, noun in (("principals", "principal"), ("roles", "role")):
        a, b = old.get(section) or {}, new.get(section) or {}
        for name in sorted(set(a) | set(b)):
            if name not in a:
                out.append({"change": f"{noun}_added", "field": name,
                            "detail": _describe(section, b[name])})
            elif name not in b:
                out.append({"change": f"{noun}_removed", "field": name, "detail": ""})
            elif a[name] != b[name]:
                out.append({"change": f"{noun}_changed", "field": name,
                            "detail": _delta(section, a[name], b[name])})
    return out


def _describe(section: str, value: Any) -> str:
    if section == "roles":
        return "; ".join(Permission.model_validate(p).describe() for p in value)
    return (f"roles {', '.join(value.get('roles') or []) or 'none'}; regions "
            f"{', '.join(value.get('regions') or []) or 'none'}; "
            f"{len(value.get('tokens') or [])} token(s)")


def _delta(section: str, a: Any, b: Any) -> str:
    if section == "roles":
        return f"{_describe(section, a)} -> {_describe(section, b)}"
    parts = []
    for key in ("roles", "regions"):
        if a.get(key) != b.get(key):
            parts.append(f"{key} {', '.join(a.get(key) or []) or 'none'} -> "
                         f"{', '.join(b.get(key) or []) or 'none'}")
    ta, tb = set(a.get("tokens") or []), set(b.get("tokens") or [])
    if ta != tb:
        parts.append(f"tokens: {len(tb - ta)} added, {len(ta - tb)} removed")
    if a.get("description") != b.get("description"):
        parts.append("description changed")
    return "; ".join(parts)


# -- the engine ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resource:
    """What an action is on: a feature (``view:feature``), a view (``feature`` is ``*``),
    or another object by name (an entity, a feature set, ``policy``)."""

    view: str
    feature: str = "*"
    tags: tuple[str, ...] = ()
    owner: str = ""
    project: str = ""
    region: str = ""
    kind: str = "feature_view"

    @property
    def label(self) -> str:
        if self.kind != "feature_view":
            return f"{self.kind.replace('_', ' ')} {self.view}"
        return f"{self.view}:{self.feature}" if self.feature != "*" else f"feature view {self.view}"

    def describe(self) -> str:
        tags = [t for t in self.tags if "=" in t and not t.startswith("region=")]
        extra = [f"tags {', '.join(tags)}" if tags else "",
                 f"owner {self.owner}" if self.owner else "",
                 f"region {self.region}" if self.region else ""]
        shown = "; ".join(e for e in extra if e)
        return f"{self.label} ({shown})" if shown else self.label


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


# Requests carry the resource as an object; PyCasbin evaluates the matcher over its
# attributes. Roles live in the grouping namespace as "role:<name>", apart from principals.
_MODEL = """
[request_definition]
r = sub, act, res
[policy_definition]
p = sub, act, view, feature, tag, owner, project, region, eft
[role_definition]
g = _, _
[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
[matchers]
m = g(r.sub, p.sub) && (p.act == "*" || r.act == p.act) \
 && (p.view == "*" || globMatch(r.res.view, p.view)) \
 && (p.feature == "*" || globMatch(r.res.feature, p.feature)) \
 && (p.tag == "*" || p.tag in r.res.tags) \
 && (p.owner == "*" || globMatch(r.res.owner, p.owner)) \
 && (p.project == "*" || globMatch(r.res.project, p.project)) \
 && (p.region == "*" || globMatch(r.res.region, p.region))
"""
_RESIDENCY_MODEL = """
[request_definition]
r = sub, region
[policy_definition]
p = sub, region
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = r.sub == p.sub && (p.region == "*" || globMatch(r.region, p.region))
"""


def _enforcer(model_text: str) -> Any:
    try:
        import casbin
        from casbin.model import Model
    except ImportError:
        raise MissingDependencyError("enforcing an access policy", "pycasbin",
                                     "access") from None
    model = Model()
    model.load_model_from_text(model_text)
    enforcer = casbin.Enforcer(model)
    enforcer.enable_auto_save(False)
    return enforcer


def _rule(role: str, perm: Permission) -> list[list[str]]:
    sel = perm.resources
    view, colon, feature = sel.name.partition(":")
    return [[ROLE_PREFIX + role, act, view or "*", feature if colon else "*", sel.tag,
             sel.owner, sel.project, sel.region, perm.effect] for act in perm.actions]


@dataclass
class CompiledPolicy:
    """A policy loaded into PyCasbin enforcers: ``decide`` answers one request."""

    policy: Policy
    _perms: Any = field(init=False, repr=False)
    _residency: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._perms = _enforcer(_MODEL)
        self._residency = _enforcer(_RESIDENCY_MODEL)
        rules = [r for role, perms in self.policy.roles.items() for perm in perms
                 for r in _rule(role, perm)]
        if rules:
            self._perms.add_policies(rules)
        groups = [[who, ROLE_PREFIX + role] for who, p in self.policy.principals.items()
                  for role in p.roles]
        if groups:
            self._perms.add_grouping_policies(groups)
        regions = [[who, region] for who, p in self.policy.principals.items()
                   for region in p.regions]
        if regions:
            self._residency.add_policies(regions)

    def decide(self, principal: str, action: str, resource: Resource) -> Decision:
        """Whether ``principal`` may do ``action`` on ``resource``, and if not, why."""
        p = self.policy.principals.get(principal)
        if p is None:
            return Decision(False, f"principal {principal!r} is not in the access policy")
        if action in READS and resource.region and not self._residency.enforce(
                principal, resource.region):
            return Decision(False, (
                f"residency: the resource is in region {resource.region!r}; {principal!r} "
                f"may read from {', '.join(p.regions) or 'no region'}"))
        allowed, rule = self._perms.enforce_ex(principal, action, resource)
        if allowed:
            return Decision(True)
        if rule and rule[-1] == "deny":
            role = rule[0].removeprefix(ROLE_PREFIX)
            perm = next(q for q in self.policy.roles[role] if q.effect == "deny"
                        and _rule(role, q) and any(r == rule for r in _rule(role, q)))
            return Decision(False, f"denied by role {role!r}: {perm.describe()}")
        roles = ", ".join(p.roles) or "none"
        return Decision(False, f"no permission of its roles ({roles}) grants {action} on it")
