"""Ablation grid files: parsing, cell expansion and per-cell configurations.

A grid file is YAML with these top-level keys:

- ``base``: configuration overrides shared by every cell, as ``section.key:
  value`` (a bare key is accepted when one section has it), or as nested
  ``section: {key: value}`` mappings.
- ``grid``: configuration keys mapped to lists of values. The cells are the
  cartesian product of the lists, in file order, the last key varying fastest.
- ``exclude`` (optional): a list of mappings from keys to a value or a list
  of values. A cell whose settings match every key of one entry is dropped.
- ``imports`` (optional): Python modules or ``.py`` files to import before
  the cells are built, so that refiners they register can be named.
- ``cell_timeout`` (optional): seconds after which a cell's run is stopped
  and recorded as failed.
- ``variants`` (optional): named bundles of overrides, such as a method with
  its refiner and k. The grid key ``variant`` then lists the names to run,
  and each cell applies its variant's overrides on top of ``base``.
- ``overrides`` (optional): a list of ``{when: {...}, set: {...}}`` entries.
  ``when`` maps grid axes (``variant`` included) to a value or a list of
  values, each of which must be on that axis. A cell that matches every key
  gets the ``set`` values on top of ``base`` and its variant, and when
  several entries match, later ones win. ``set`` cannot change an axis. Use
  it for a setting that depends on another axis, such as a shorter warm-up
  for one noise convention. The cell keeps the name its axes give.

Relative paths (``data.root``, ``data.noise_file``, ``.py`` imports) are
resolved against the current working directory, as on the command line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import SECTIONS, Config, ConfigError, read_yaml, resolve_key, validate_config

logger = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("base", "grid", "exclude", "imports", "cell_timeout", "variants", "overrides")

# The axis that selects a named variant; it is not a configuration key.
VARIANT_KEY = "grid.variant"

# Settings that never change a run's result, so they are left out of its hash.
UNHASHED_KEYS = {"train.out_dir", "train.run_name", "train.progress", "train.device", "train.num_threads"}

# Keys whose values are paths relative to the working directory.
PATH_KEYS = ("data.root", "data.noise_file")


class GridError(ConfigError):
    """An invalid grid file."""


@dataclass
class GridSpec:
    """A parsed grid file.

    Attributes:
        path: the grid file.
        base: overrides shared by every cell, keyed ``section.field``.
        axes: ``section.field`` mapped to the values to combine, in file order.
        exclude: partial settings; a cell matching every key of one is dropped.
        imports: modules or ``.py`` files to import before building cells.
        cell_timeout: seconds after which a cell's run is stopped, or None.
        variants: named bundles of overrides, keyed by variant name.
        overrides: ``(when, set)`` pairs; a cell matching ``when`` gets ``set``.
    """

    path: Path
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    exclude: list[dict[str, list[Any]]] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    cell_timeout: float | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: list[tuple[dict[str, list[Any]], dict[str, Any]]] = field(default_factory=list)


@dataclass
class Cell:
    """One combination of grid values and the configuration it resolves to.

    Attributes:
        cell_id: file-system safe name made from the settings; the key of
            the cell's row in ``results.csv`` and the name of its folder.
        settings: the grid values of this cell, keyed ``section.field``.
        config: the resolved configuration, or None when it is invalid.
        config_hash: hash of the resolved configuration (empty when invalid);
            a finished row with another hash is run again.
        error: why the configuration is invalid, or None.
    """

    cell_id: str
    settings: dict[str, Any]
    config: Config | None
    config_hash: str
    error: str | None

    @property
    def label(self) -> str:
        """Return ``field=value`` pairs of the cell's settings, for logs and tables."""
        if not self.settings:
            return "base"
        return ", ".join(f"{short_name(key)}={value}" for key, value in self.settings.items())


def short_name(key: str) -> str:
    """Return the field part of ``section.field``."""
    return key.split(".", 1)[1]


def _flatten_overrides(values: Any, where: str, source: str) -> dict[str, Any]:
    """Return ``{section.field: value}`` from flat dotted keys or nested section mappings."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise GridError(f"{source}: {where} must be a mapping of config keys to values, got {type(values).__name__}")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        key = str(key)
        if key in SECTIONS and isinstance(value, dict):
            for inner_key, inner_value in value.items():
                flat[f"{key}.{inner_key}"] = inner_value
        else:
            flat[key] = value
    resolved: dict[str, Any] = {}
    for key, value in flat.items():
        try:
            section, name = resolve_key(key, source=f"{source}: {where}")
        except ConfigError as error:
            raise GridError(str(error)) from None
        canonical = f"{section}.{name}"
        if canonical in resolved:
            raise GridError(f"{source}: {where} sets {canonical} twice (as {key!r} and another spelling)")
        resolved[canonical] = value
    return resolved


def _value_list(value: Any, key: str, where: str, source: str, allow_scalar: bool) -> list[Any]:
    if isinstance(value, list):
        if not value:
            raise GridError(f"{source}: {where}.{key} is an empty list; give at least one value")
        return value
    if allow_scalar:
        return [value]
    raise GridError(f"{source}: {where}.{key}={value!r} must be a list of values, e.g. [{value!r}]")


def load_grid(path: str | Path) -> GridSpec:
    """Parse a grid file; raise :class:`GridError` for an invalid layout or key.

    Values are checked per cell later (see :func:`expand_cells`), because a
    value may only be invalid in combination with another one.
    """
    path = Path(path)
    if path.is_dir():
        raise GridError(f"{path} is a folder; expected a grid YAML file")
    if not path.is_file():
        raise GridError(f"grid file not found: {path}")
    source = str(path)
    try:
        document = read_yaml(path)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise GridError(f"{source}: not a valid YAML file: {error}") from None
    if not isinstance(document, dict):
        raise GridError(f"{source}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    unknown = sorted(set(map(str, document)) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise GridError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; expected {', '.join(TOP_LEVEL_KEYS)}")

    base = _flatten_overrides(document.get("base"), "base", source)
    grid_document = document.get("grid")
    variants = _parse_variants(document.get("variants"), source)
    axes = {}
    if isinstance(grid_document, dict):
        for key, value in grid_document.items():
            if key == "variant":
                names = _value_list(value, "variant", "grid", source, allow_scalar=False)
                unknown_names = [name for name in names if name not in variants]
                if unknown_names:
                    raise GridError(
                        f"{source}: grid.variant names {unknown_names} that the variants section does not define"
                    )
                axes[VARIANT_KEY] = names
            else:
                for flat_key, flat_value in _flatten_overrides({key: value}, "grid", source).items():
                    axes[flat_key] = _value_list(flat_value, flat_key, "grid", source, allow_scalar=False)
    else:
        _flatten_overrides(grid_document, "grid", source)
    for key in axes:
        if key in base:
            raise GridError(f"{source}: {key} is set in both base and grid; keep it in one of them")
        if key in UNHASHED_KEYS:
            raise GridError(f"{source}: grid.{key} does not change a run's result and cannot be a grid axis")
    if "data.noise_ratio" in axes and (base.get("data.noise_file") or "data.noise_file" in axes):
        raise GridError(
            f"{source}: grid varies data.noise_ratio but data.noise_file is set, and a noise file fixes the noise; "
            "remove data.noise_file or the noise_ratio axis"
        )

    exclude_entries = document.get("exclude") or []
    if not isinstance(exclude_entries, list):
        raise GridError(f"{source}: exclude must be a list of mappings, got {type(exclude_entries).__name__}")
    exclude = []
    for number, entry in enumerate(exclude_entries):
        where = f"exclude[{number}]"
        flat = _condition(entry, where, source)
        if not flat:
            raise GridError(f"{source}: {where} is empty and would drop every cell")
        exclude.append(flat)
    overrides = _parse_overrides(document.get("overrides"), axes, source)

    imports = document.get("imports") or []
    if not isinstance(imports, list) or not all(isinstance(item, str) for item in imports):
        raise GridError(f"{source}: imports must be a list of module names or .py files, got {imports!r}")

    cell_timeout = document.get("cell_timeout")
    if cell_timeout is not None:
        if isinstance(cell_timeout, bool) or not isinstance(cell_timeout, (int, float)) or cell_timeout <= 0:
            raise GridError(f"{source}: cell_timeout={cell_timeout!r} is invalid; expected a positive number of seconds")
        cell_timeout = float(cell_timeout)
    return GridSpec(path, base, axes, exclude, list(imports), cell_timeout, variants, overrides)


def _condition(entry: Any, where: str, source: str) -> dict[str, list[Any]]:
    """Return ``{section.field: [values]}`` from an ``exclude`` entry or an override's ``when``."""
    entry = dict(entry) if isinstance(entry, dict) else entry
    has_variant = isinstance(entry, dict) and "variant" in entry
    variant_names = entry.pop("variant") if has_variant else None
    if has_variant and variant_names is None:
        raise GridError(f"{source}: {where}.variant is empty; name one variant or a list of them")
    flat = _flatten_overrides(entry, where, source)
    if variant_names is not None:
        flat[VARIANT_KEY] = variant_names
    return {key: _value_list(value, key, where, source, allow_scalar=True) for key, value in flat.items()}


def _parse_overrides(
    entries: Any, axes: dict[str, list[Any]], source: str
) -> list[tuple[dict[str, list[Any]], dict[str, Any]]]:
    """Return the ``(when, set)`` pairs of the ``overrides`` section."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise GridError(f"{source}: overrides must be a list of {{when: ..., set: ...}} mappings")
    parsed = []
    for number, entry in enumerate(entries):
        where = f"overrides[{number}]"
        if not isinstance(entry, dict):
            raise GridError(f"{source}: {where} must be a mapping with the keys when and set")
        missing = sorted({"when", "set"} - set(map(str, entry)))
        extra = sorted(set(map(str, entry)) - {"when", "set"})
        if missing or extra:
            problems = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unknown {', '.join(extra)}"] * bool(extra)
            raise GridError(f"{source}: {where} must have exactly the keys when and set ({'; '.join(problems)})")
        when = _condition(entry["when"], f"{where}.when", source)
        if not when:
            raise GridError(f"{source}: {where}.when is empty; name the grid values it applies to")
        not_axes = [short_name(key) if key != VARIANT_KEY else "variant" for key in when if key not in axes]
        if not_axes:
            raise GridError(f"{source}: {where}.when names {not_axes}, which the grid does not vary")
        for key, values in when.items():
            _check_axis_values(key, values, axes[key], f"{where}.when", source)
        if isinstance(entry["set"], dict) and "variant" in entry["set"]:
            raise GridError(f"{source}: {where}.set names variant, which is a grid axis; put the variant in when")
        values = _flatten_overrides(entry["set"], f"{where}.set", source)
        if not values:
            raise GridError(f"{source}: {where}.set is empty; give at least one config key and value")
        on_axes = [key for key in values if key in axes]
        if on_axes:
            raise GridError(f"{source}: {where}.set changes the grid axis {on_axes[0]}; an axis takes its values from grid")
        if values.get("data.noise_file") and "data.noise_ratio" in axes:
            raise GridError(
                f"{source}: {where}.set gives data.noise_file but the grid varies data.noise_ratio, and a noise file "
                "fixes the noise; remove one of them"
            )
        parsed.append((when, values))
    return parsed


def _typed_or_raw(key: str, value: Any) -> Any:
    """Return the value converted to the field's type, or unchanged when it does not convert."""
    try:
        return _typed(key, value)
    except ConfigError:
        return value


def _check_axis_values(key: str, values: list[Any], axis: list[Any], where: str, source: str) -> None:
    """Raise :class:`GridError` unless every value of a ``when`` key is on its axis."""
    name = "variant" if key == VARIANT_KEY else short_name(key)
    if key == VARIANT_KEY:
        unknown = [value for value in values if value not in axis]
    else:
        typed_axis = [_typed_or_raw(key, value) for value in axis]
        unknown = []
        for value in values:
            try:
                typed = _typed(key, value)
            except ConfigError as error:
                raise GridError(f"{source}: {where}.{name}={value!r} is invalid: {error}") from None
            if typed not in typed_axis:
                unknown.append(value)
    if unknown:
        raise GridError(f"{source}: {where}.{name} lists {unknown}, which the {name} axis {axis} does not have")


def _parse_variants(values: Any, source: str) -> dict[str, dict[str, Any]]:
    """Return ``{name: {section.field: value}}`` from the ``variants`` section."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise GridError(f"{source}: variants must map names to mappings of overrides, got {type(values).__name__}")
    return {str(name): _flatten_overrides(overrides, f"variants.{name}", source) for name, overrides in values.items()}


def import_plugins(imports: list[str]) -> None:
    """Import modules by name or ``.py`` files by path, so their refiners get registered."""
    for item in imports:
        if item.endswith(".py"):
            file = Path(item).resolve()
            if not file.is_file():
                raise GridError(f"imports: file not found: {item}")
            module_name = f"in2r_graph_plugin_{file.stem}"
            if module_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module_name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(item)
            except ImportError as error:
                raise GridError(f"imports: cannot import module {item!r}: {error}") from None


def config_hash(config: Config) -> str:
    """Return a short hash of the settings that can change a run's result.

    NOTE: every field is hashed, so a new configuration field changes the
    hash of every configuration, and a results folder made before it then
    counts all its rows as stale and trains them again. Leaving out fields
    at their default value would not fix this, because it would also keep
    rows whose meaning changed when an existing default moved.
    """
    values = config.to_dict()
    for key in UNHASHED_KEYS:
        section, name = key.split(".")
        values[section].pop(name, None)
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def cell_id_for(settings: dict[str, Any]) -> str:
    """Return a file-system safe name such as ``refiner=gat,k=5,seed=0``."""
    if not settings:
        return "base"
    parts = [re.sub(r"[^A-Za-z0-9._=+-]+", "-", f"{short_name(key)}={value}") for key, value in settings.items()]
    return ",".join(parts)


def _typed(key: str, value: Any) -> Any:
    """Convert a grid value to the field's type, as the configuration stores it."""
    scratch = Config()
    scratch.set(key, value, source="grid")
    section, name = key.split(".")
    return getattr(getattr(scratch, section), name)


def _matches(settings: dict[str, Any], config: Config | None, entry: dict[str, list[Any]]) -> bool:
    for key, values in entry.items():
        if key == VARIANT_KEY:
            if settings.get(key) not in values:
                return False
            continue
        section, name = key.split(".")
        if config is not None:
            current = getattr(getattr(config, section), name)
        elif key in settings:
            current = settings[key]
        else:
            return False
        candidates = [_typed_or_raw(key, value) for value in values]
        if current not in candidates:
            return False
    return True


def _resolve_paths(overrides: dict[str, Any]) -> dict[str, Any]:
    resolved = dict(overrides)
    for key in PATH_KEYS:
        value = resolved.get(key)
        if isinstance(value, str) and value.strip():
            resolved[key] = str(Path(value).expanduser().resolve())
    return resolved


def build_cell_config(
    spec: GridSpec, settings: dict[str, Any], *, data_root: str | Path | None = None
) -> Config:
    """Return the validated configuration of one cell; raise :class:`ConfigError` when invalid."""
    variant = settings.get(VARIANT_KEY)
    variant_overrides = spec.variants.get(variant, {}) if variant is not None else {}
    plain_settings = {key: value for key, value in settings.items() if key != VARIANT_KEY}
    # Match on typed values, so that a quoted "3" on an axis matches 3 in when.
    typed_settings = {key: value if key == VARIANT_KEY else _typed_or_raw(key, value) for key, value in settings.items()}
    conditional: dict[str, Any] = {}
    for when, values in spec.overrides:
        if _matches(typed_settings, None, when):
            conditional.update(values)
    overrides = {**spec.base, **variant_overrides, **conditional, **plain_settings}
    if data_root is not None:
        overrides["data.root"] = str(data_root)
    overrides = _resolve_paths(overrides)
    config = Config()
    for key, value in overrides.items():
        config.set(key, value, source=str(spec.path))
    config.train.progress = False
    validate_config(config)
    check_refiner(config)
    return config


def check_refiner(config: Config) -> None:
    """Build one refiner with the cell's settings so that invalid combinations fail before a run starts."""
    if config.train.method != "in2r":
        return
    # PyTorch Geometric loads slowly; only grids with in2r cells need it.
    from ..refiners import build_refiner
    from ..training.network import refiner_options

    try:
        build_refiner(config.rectify.refiner, config.model.embed_dim, **refiner_options(config))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"invalid refiner settings: {error}") from None


def expand_cells(spec: GridSpec, *, data_root: str | Path | None = None) -> list[Cell]:
    """Return the grid's cells in order, each with its configuration or the error that makes it invalid.

    Cells matching an ``exclude`` entry are dropped. An invalid combination
    (for example ``topology: star`` without ``query_node: true``, or edge
    weights with a refiner that cannot use them) becomes a cell with
    ``config=None`` and the error, not an exception.
    """
    import_plugins(spec.imports)
    keys = list(spec.axes)
    cells: list[Cell] = []
    seen: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*(spec.axes[key] for key in keys)):
        settings = dict(zip(keys, values))
        try:
            config = build_cell_config(spec, settings, data_root=data_root)
            error = None
        except ConfigError as invalid:
            config, error = None, str(invalid)
        if any(_matches(settings, config, entry) for entry in spec.exclude):
            continue
        cell_id = cell_id_for(settings)
        if cell_id in seen:
            raise GridError(
                f"{spec.path}: cells {seen[cell_id]} and {settings} map to the same name {cell_id!r}; "
                "make the grid values distinct"
            )
        seen[cell_id] = settings
        digest = config_hash(config) if config is not None else ""
        cells.append(Cell(cell_id, settings, config, digest, error))
    logger.debug("grid %s: %d cells (%d invalid)", spec.path, len(cells), sum(cell.error is not None for cell in cells))
    return cells
