"""Province centres for the map facts: geopy (rate limited, disk cached) or offline.

The customer table names a province per customer (``home_location``), in whatever
spelling the source used ("Jakarta Raya", "DKI Jakarta", "Yogyakarta", ...). This
module turns such a name into a canonical province and its centre:

* :func:`canonical_province` — offline: the gazetteer shipped in
  ``batch/data/id_provinces.json`` (all 38 provinces, their aliases and approximate
  centres). Never touches the network.
* :class:`ProvinceLocator` — with ``geocode=True`` it asks a geopy geocoder (Nominatim
  by default, rate limited with :class:`geopy.extra.rate_limiter.RateLimiter`) and keeps
  the answers in a JSON disk cache; the first network failure switches the locator to
  the gazetteer for the rest of its life, so a run never blocks or fails offline.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import re
import socket
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, NamedTuple, Optional

log = logging.getLogger(__name__)

GAZETTEER_PATH = Path(__file__).with_name("data") / "id_provinces.json"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "shopstream", "geocode.json")
DEFAULT_USER_AGENT = "shopstream-batch (https://github.com/shopstream)"
#: Indonesia's bounding box (with a margin): geocoder answers outside it are refused.
_BBOX = (-11.5, 6.5, 94.5, 141.5)   # lat min, lat max, lon min, lon max


class ProvinceCentre(NamedTuple):
    province: str            # canonical name (gazetteer), or the cleaned input if unknown
    latitude: Optional[float]
    longitude: Optional[float]
    source: str              # "gazetteer", "geopy", "cache" or "unknown"


# --------------------------------------------------------------------------- offline
_PREFIXES = ("provinsi ", "propinsi ", "province of ", "prov ", "provinces of ")
_SUFFIXES = (" province", " provinsi", " indonesia")


def normalise(name: Any) -> str:
    """Lower-case, strip punctuation and the words "province"/"provinsi"; Sumatra →
    Sumatera; "Kep." → "kepulauan"; "D.I." → "di"."""
    s = str(name or "").strip().lower()
    s = s.replace(".", "")                 # D.K.I. → dki, D.I. → di, Kep. → kep
    s = re.sub(r"[^0-9a-z]+", " ", s).strip()
    s = re.sub(r"\s+", " ", s)
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if s.startswith(p):
                s, changed = s[len(p):], True
        for x in _SUFFIXES:
            if s.endswith(x):
                s, changed = s[: -len(x)], True
    s = re.sub(r"\bsumatra\b", "sumatera", s)
    s = re.sub(r"^kep\b", "kepulauan", s)
    s = re.sub(r"\bjogya?karta\b", "yogyakarta", s)
    return s.strip()


@lru_cache(maxsize=1)
def gazetteer() -> Dict[str, dict]:
    """canonical name → {"name", "iso", "lat", "lon", "aliases"} (all 38 provinces)."""
    data = json.loads(GAZETTEER_PATH.read_text(encoding="utf-8"))
    return {p["name"]: p for p in data["provinces"]}


@lru_cache(maxsize=1)
def _alias_index() -> Dict[str, str]:
    index: Dict[str, str] = {}
    for name, p in gazetteer().items():
        for alias in (name, p["iso"], *p["aliases"]):
            index.setdefault(normalise(alias), name)
    return index


_HONORIFICS = ("daerah khusus ibukota ", "daerah khusus ibu kota ", "daerah khusus ",
               "daerah istimewa ", "dki ", "di ", "nanggroe ")


@lru_cache(maxsize=4096)
def canonical_province(name: Any) -> Optional[str]:
    """The gazetteer's name of a province however the data spells it, or None."""
    key = normalise(name)
    if not key:
        return None
    index = _alias_index()
    if key in index:
        return index[key]
    for h in _HONORIFICS:                       # "DI Yogyakarta", "DKI Jakarta Raya" ...
        if key.startswith(h) and key[len(h):] in index:
            return index[key[len(h):]]
    close = difflib.get_close_matches(key, list(index), n=1, cutoff=0.88)  # typos
    return index[close[0]] if close else None


def gazetteer_centre(name: Any) -> ProvinceCentre:
    """Offline lookup; unknown names keep their cleaned spelling and no coordinates."""
    canon = canonical_province(name)
    if canon is None:
        return ProvinceCentre(str(name or "").strip() or None, None, None, "unknown")
    p = gazetteer()[canon]
    return ProvinceCentre(canon, p["lat"], p["lon"], "gazetteer")


# --------------------------------------------------------------------------- geopy
class _DiskCache:
    """A JSON file of query → [lat, lon]; written atomically, shared by threads."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self.lock = threading.Lock()
        self.data: Dict[str, Optional[list]] = {}
        if path and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    loaded = json.load(fh)
                if isinstance(loaded, dict):
                    self.data = loaded
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable geocode cache %s: %s", path, exc)

    def get(self, key: str):
        return self.data.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def put(self, key: str, value: Optional[list]) -> None:
        with self.lock:
            self.data[key] = value
            if not self.path:
                return
            try:
                folder = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(folder, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".geocode-", suffix=".json")
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self.data, fh, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except OSError as exc:  # a read-only disk must not fail the run
                log.warning("could not write geocode cache %s: %s", self.path, exc)


def _reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ProvinceLocator:
    """Resolve province names to centres: disk cache → geopy → offline gazetteer.

    ``geocoder`` is any object with ``geocode(query, **kw)`` returning an object with
    ``latitude``/``longitude`` (or None) — a geopy geocoder, or a stub in tests. Without
    one, and with ``geocode=True``, a rate-limited Nominatim is used when reachable.
    """

    def __init__(self, geocode: bool = False, cache_path: Optional[str] = DEFAULT_CACHE,
                 geocoder=None, min_delay_seconds: float = 1.0, timeout: float = 5.0,
                 user_agent: str = DEFAULT_USER_AGENT, check_reachable: bool = True):
        self.enabled = bool(geocode)
        self.cache = _DiskCache(cache_path if self.enabled else None)
        self.timeout = timeout
        self._geocode = None
        self._offline_reason: Optional[str] = None
        self.stats = {"gazetteer": 0, "geopy": 0, "cache": 0, "unknown": 0}
        if not self.enabled:
            return
        if geocoder is None:
            try:
                from geopy.geocoders import Nominatim
            except ImportError as exc:
                self._go_offline(f"geopy is not installed ({exc})")
                return
            geocoder = Nominatim(user_agent=user_agent, timeout=timeout)
            host = getattr(geocoder, "domain", "nominatim.openstreetmap.org")
            if check_reachable and not _reachable(host, timeout=min(timeout, 2.0)):
                self._go_offline(f"{host} is not reachable")
                return
        from geopy.extra.rate_limiter import RateLimiter

        self._geocode = RateLimiter(geocoder.geocode, min_delay_seconds=min_delay_seconds,
                                    max_retries=0, swallow_exceptions=False)

    @property
    def online(self) -> bool:
        return self._geocode is not None

    def _go_offline(self, reason: str) -> None:
        if self._offline_reason is None:
            log.warning("geocoding disabled, using the offline gazetteer: %s", reason)
        self._offline_reason = reason
        self._geocode = None

    def resolve(self, name: Any) -> ProvinceCentre:
        offline = gazetteer_centre(name)
        if not self.enabled or offline.province is None:
            self.stats[offline.source] += 1
            return offline
        query = f"{offline.province}, Indonesia"
        key = normalise(query)
        if key in self.cache:
            hit = self.cache.get(key)
            if hit:
                self.stats["cache"] += 1
                return ProvinceCentre(offline.province, float(hit[0]), float(hit[1]), "cache")
            self.stats[offline.source] += 1
            return offline
        if self._geocode is None:
            self.stats[offline.source] += 1
            return offline
        try:
            loc = self._geocode(query, exactly_one=True, timeout=self.timeout,
                                country_codes="id")
        except TypeError:       # a geocoder without those keywords (or a simple stub)
            try:
                loc = self._geocode(query)
            except Exception as exc:  # noqa: BLE001 - any geocoder failure → offline
                self._go_offline(f"{type(exc).__name__}: {exc}")
                self.stats[offline.source] += 1
                return offline
        except Exception as exc:  # noqa: BLE001 - network, quota, service errors
            self._go_offline(f"{type(exc).__name__}: {exc}")
            self.stats[offline.source] += 1
            return offline
        lat = getattr(loc, "latitude", None) if loc is not None else None
        lon = getattr(loc, "longitude", None) if loc is not None else None
        if lat is None or lon is None or not (_BBOX[0] <= lat <= _BBOX[1]
                                              and _BBOX[2] <= lon <= _BBOX[3]):
            self.cache.put(key, None)        # remembered: do not ask again
            self.stats[offline.source] += 1
            return offline
        self.cache.put(key, [float(lat), float(lon)])
        self.stats["geopy"] += 1
        return ProvinceCentre(offline.province, float(lat), float(lon), "geopy")

    def resolve_all(self, names: Iterable[Any]) -> Dict[Any, ProvinceCentre]:
        return {n: self.resolve(n) for n in names}
