"""Province centres: the offline gazetteer, and the geopy path with stub geocoders only
(these tests never touch the network)."""
from __future__ import annotations

import json

import pytest

from batch import geo


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach a geocoder service fails the test."""
    def refuse(*a, **k):
        raise AssertionError("a test tried to reach the network")
    monkeypatch.setattr(geo, "_reachable", lambda *a, **k: False)
    monkeypatch.setattr("socket.create_connection", refuse)


class Loc:
    def __init__(self, lat, lon):
        self.latitude, self.longitude = lat, lon


class StubGeocoder:
    """Stands in for a geopy geocoder: records queries, answers from a table."""

    def __init__(self, answers=None, fail=None):
        self.answers = answers or {}
        self.fail = fail
        self.queries = []

    def geocode(self, query, **kw):
        self.queries.append(query)
        if self.fail:
            raise self.fail
        return self.answers.get(query)


def test_gazetteer_has_all_38_provinces_with_centres_in_indonesia():
    g = geo.gazetteer()
    assert len(g) == 38
    assert len({p["iso"] for p in g.values()}) == 38
    for name, p in g.items():
        assert -11.5 <= p["lat"] <= 6.5 and 94.5 <= p["lon"] <= 141.5, name
        assert geo.canonical_province(name) == name


@pytest.mark.parametrize("raw, canonical", [
    ("Jakarta Raya", "DKI Jakarta"), ("DKI Jakarta", "DKI Jakarta"),
    ("D.K.I. Jakarta", "DKI Jakarta"), ("Daerah Khusus Ibukota Jakarta", "DKI Jakarta"),
    ("Daerah Istimewa Yogyakarta", "Daerah Istimewa Yogyakarta"),
    ("Yogyakarta", "Daerah Istimewa Yogyakarta"), ("DI Yogyakarta", "Daerah Istimewa Yogyakarta"),
    ("Nanggroe Aceh Darussalam", "Aceh"), ("Aceh", "Aceh"),
    ("Kepulauan Bangka Belitung", "Kepulauan Bangka Belitung"),
    ("Bangka Belitung", "Kepulauan Bangka Belitung"),
    ("Sumatra Utara", "Sumatera Utara"), ("  sumatera   utara ", "Sumatera Utara"),
    ("Provinsi Jawa Barat", "Jawa Barat"), ("West Java", "Jawa Barat"),
    ("Kep. Riau", "Kepulauan Riau"), ("Papua Barat Daya", "Papua Barat Daya"),
    ("Papua", "Papua"), ("Kalimantan Utaraa", "Kalimantan Utara"),
])
def test_name_variants_resolve(raw, canonical):
    assert geo.canonical_province(raw) == canonical
    c = geo.gazetteer_centre(raw)
    assert c.province == canonical and c.source == "gazetteer" and c.latitude is not None


def test_unknown_and_empty_names_keep_no_coordinates():
    assert geo.gazetteer_centre("Atlantis") == geo.ProvinceCentre("Atlantis", None, None, "unknown")
    assert geo.gazetteer_centre("").province is None
    assert geo.gazetteer_centre(None).latitude is None


def test_every_province_name_the_generator_uses_is_known():
    generate = pytest.importorskip("pipelines.generate")
    for row in generate.PROVINCES:
        assert geo.canonical_province(row[0]) is not None, row[0]


def test_disabled_locator_never_calls_the_geocoder(tmp_path):
    stub = StubGeocoder({"DKI Jakarta, Indonesia": Loc(-6.1, 106.8)})
    loc = geo.ProvinceLocator(geocode=False, geocoder=stub, cache_path=str(tmp_path / "c.json"))
    assert loc.resolve("Jakarta Raya").source == "gazetteer"
    assert stub.queries == [] and not (tmp_path / "c.json").exists()


def test_default_geocoder_offline_falls_back_without_blocking(tmp_path):
    loc = geo.ProvinceLocator(geocode=True, cache_path=str(tmp_path / "c.json"))
    assert not loc.online
    c = loc.resolve("Jawa Timur")
    assert c.source == "gazetteer" and c.latitude == pytest.approx(-7.5361)


def test_geopy_answers_are_used_and_cached_on_disk(tmp_path):
    cache = tmp_path / "geo" / "cache.json"
    stub = StubGeocoder({"DKI Jakarta, Indonesia": Loc(-6.2, 106.85)})
    loc = geo.ProvinceLocator(geocode=True, geocoder=stub, cache_path=str(cache),
                              min_delay_seconds=0)
    a = loc.resolve("Jakarta Raya")
    b = loc.resolve("DKI Jakarta")          # same canonical query: served from the cache
    assert a == geo.ProvinceCentre("DKI Jakarta", -6.2, 106.85, "geopy")
    assert b.source == "cache" and b.latitude == -6.2
    assert stub.queries == ["DKI Jakarta, Indonesia"]
    assert json.loads(cache.read_text()) == {"dki jakarta": [-6.2, 106.85]}
    # a new locator (next run) reads the disk cache and asks nobody
    stub2 = StubGeocoder()
    again = geo.ProvinceLocator(geocode=True, geocoder=stub2, cache_path=str(cache),
                                min_delay_seconds=0).resolve("Jakarta")
    assert again.source == "cache" and stub2.queries == []


def test_geocoder_failure_switches_to_the_gazetteer_for_good(tmp_path):
    from geopy.exc import GeocoderUnavailable

    stub = StubGeocoder(fail=GeocoderUnavailable("no route to host"))
    loc = geo.ProvinceLocator(geocode=True, geocoder=stub, cache_path=str(tmp_path / "c.json"),
                              min_delay_seconds=0)
    assert loc.resolve("Bali").source == "gazetteer"
    assert loc.resolve("Jawa Barat").source == "gazetteer"
    assert len(stub.queries) == 1 and not loc.online      # asked once, then offline


def test_answers_outside_indonesia_or_missing_are_refused(tmp_path):
    stub = StubGeocoder({"Bali, Indonesia": Loc(48.8, 2.3)})   # Paris
    loc = geo.ProvinceLocator(geocode=True, geocoder=stub, cache_path=str(tmp_path / "c.json"),
                              min_delay_seconds=0)
    c = loc.resolve("Bali")
    assert c.source == "gazetteer" and c.latitude == pytest.approx(-8.3405)
    assert loc.resolve("Riau").source == "gazetteer"           # geocoder found nothing
    assert loc.resolve("Bali").source == "gazetteer" and len(stub.queries) == 2  # remembered


def test_names_the_gazetteer_lacks_are_asked_to_geopy(tmp_path):
    stub = StubGeocoder({"Kota Bandung, Indonesia": Loc(-6.91, 107.61)})
    loc = geo.ProvinceLocator(geocode=True, geocoder=stub, cache_path=str(tmp_path / "c.json"),
                              min_delay_seconds=0)
    assert loc.resolve("Kota Bandung") == geo.ProvinceCentre("Kota Bandung", -6.91, 107.61, "geopy")
    assert loc.resolve("Atlantis").source == "unknown"
    assert loc.resolve("").source == "unknown"
    assert stub.queries == ["Kota Bandung, Indonesia", "Atlantis, Indonesia"]
