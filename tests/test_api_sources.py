"""Open-licence JSON API sources: Openverse and Wikimedia Commons answers recorded from their
documented formats (tests/api_fixtures/), served for real on 127.0.0.1, crawled by the real
spider, middleware and pipeline into a real SQLite inbox. No browser: API sources need none."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from api_fixtures.server import FIXTURES, start_server

from core.config import Config, ConfigError, load_config
from core.licenses import FAMILIES, attribution_text, family, normalise
from core.sources import BUILTIN, SourceProfile, profile_from_mapping
from crawler.api_sources import parse_page, request_url
from crawler.errors import SourceRefusedError
from crawler.rate_limit import Limits, LocalBudget, RedisBudget, retry_after
from crawler.run import crawl

CONTACT_UA = "pingo-tests/1.0 (https://example.org/pingo; tests@example.org)"
# the licences of the first pages of the fixtures, normalised
SERVED_LICENSES = {
    *("CC-BY-2.0", "CC0-1.0", "CC-BY-SA-4.0", "CC-BY-NC-2.0"),
    *("CC-BY-4.0", "CC-PDM-1.0", "CC-BY-ND-3.0", "public-domain"),
}


@pytest.fixture
def api():
    server = start_server()
    yield server
    server.stop()


def api_toml(
    url: str,
    classes: dict[str, tuple[list[str], int]],
    sources=("openverse", "wikimedia"),
    openverse: dict | None = None,
    wikimedia: dict | None = None,
    **crawl_settings,
) -> str:
    """pingo.toml: classes (name -> keywords, target) and both APIs pointed at ``url``."""

    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = []
    for name, (keywords, target) in classes.items():
        lines += [f'[classes."{name}"]', f"keywords = {value(keywords)}", f"target = {target}"]
    settings = {
        "sources": list(sources),
        "demo_url": url,  # trusted: images from 127.0.0.1 are allowed
        "user_agent": CONTACT_UA,
        "download_timeout": 3.0,
        "retries": 1,
        **crawl_settings,
    }
    lines.append("[crawl]")
    lines += [f"{k} = {value(v)}" for k, v in settings.items()]
    profiles = {
        "openverse": {"api_url": "{demo_url}/openverse", "page_size": 4, "per_minute": 0,
                      "per_day": 0, **(openverse or {})},
        "wikimedia": {"api_url": "{demo_url}/wikimedia/w/api.php", "page_size": 3,
                      "per_minute": 0, **(wikimedia or {})},
    }  # fmt: skip
    for name, table in profiles.items():
        lines.append(f"[crawl.profiles.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def rows(project) -> list[dict]:
    with project.store() as store:
        return list(store.iter_images())


def searches(api, source: str) -> list:
    return api.seen("/openverse/v1/images/" if source == "openverse" else "/wikimedia/w/api.php")


# ---- what an answer holds (no server) --------------------------------------------------------


def fixture_body(name: str, base="http://127.0.0.1:1", q="cat") -> bytes:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return text.replace("{base}", base).replace("{q}", q).encode()


def test_openverse_answers_give_each_image_with_its_licence_and_the_next_page():
    profile = dataclass_replace(BUILTIN["openverse"], page_size=4)
    page = parse_page(profile, fixture_body("openverse_images_page1.json"), None)
    assert page.next_cursor == 2 and page.total == 10
    first, second, _, untitled = page.results
    assert first.image_url == "http://127.0.0.1:1/img/openverse/cat/p1-1.png"
    assert first.page_url == "http://127.0.0.1:1/landing/flickr/cat/1"
    assert (first.license, first.creator, first.title) == (
        "CC-BY-2.0",
        "Jane Doe",
        "Tabby cat on a windowsill",
    )
    assert first.license_url == "https://creativecommons.org/licenses/by/2.0/"
    assert first.attribution.startswith('"Tabby cat on a windowsill" by Jane Doe is licensed')
    assert second.license == "CC0-1.0"
    assert untitled.title is None and untitled.license == "CC-BY-NC-2.0"
    # the last page says so: no next page; nor past max_pages
    assert parse_page(profile, fixture_body("openverse_images_page3.json"), 3).next_cursor is None
    capped = dataclass_replace(profile, max_pages=1)
    assert parse_page(capped, fixture_body("openverse_images_page1.json"), 1).next_cursor is None


def test_wikimedia_answers_strip_html_from_the_artist_and_say_unknown_without_a_licence():
    profile = dataclass_replace(BUILTIN["wikimedia"], page_size=3)
    page = parse_page(profile, fixture_body("wikimedia_search_0.json"), None)
    assert page.next_cursor == 3
    # in search order (the "index" field), the thumbnail rather than the original
    assert [r.image_url.rsplit("/", 1)[1] for r in page.results] == [
        "w0-1-1280px.png",
        "w0-2-1280px.png",
        "w0-3-1280px.png",
    ]
    pd, bysa, de = page.results
    assert (pd.license, pd.creator) == ("public-domain", "Unknown author")
    assert (bysa.license, bysa.creator, bysa.title) == (
        "CC-BY-SA-4.0",
        "Example & Friends",
        "Domestic cat (2019)",
    )
    assert bysa.attribution == (
        '"Domestic cat (2019)" by Example & Friends is licensed under CC BY-SA 4.0 '
        "(https://creativecommons.org/licenses/by-sa/4.0), via Wikimedia Commons."
    )
    assert (de.license, de.creator) == ("CC-BY-3.0-DE", "Max Mustermann")
    last = parse_page(profile, fixture_body("wikimedia_search_3.json"), 3)
    assert last.next_cursor is None
    cc0, bare = last.results
    assert cc0.license == "CC0-1.0" and cc0.creator == "Studio A"
    assert (bare.license, bare.license_url, bare.creator) == ("unknown", None, None)
    assert bare.attribution == '"Cat no license", via Wikimedia Commons.'


def test_an_answer_that_is_not_the_documented_json_is_a_named_error():
    from crawler.api_sources import ApiAnswerError

    with pytest.raises(ApiAnswerError, match="not JSON"):
        parse_page(BUILTIN["openverse"], b"<html>maintenance</html>", None)
    with pytest.raises(ApiAnswerError, match="'results'"):
        parse_page(BUILTIN["openverse"], b'{"detail": "x"}', None)
    with pytest.raises(ApiAnswerError, match="badvalue"):
        parse_page(BUILTIN["wikimedia"], b'{"error": {"code": "badvalue", "info": "no"}}', None)


@pytest.mark.parametrize(
    ("said", "expected", "fam"),
    [
        (("by", "2.0", None), "CC-BY-2.0", "by"),
        (("by-nc-sa", "4.0", None), "CC-BY-NC-SA-4.0", "by-nc-sa"),
        (("cc0", "1.0", None), "CC0-1.0", "cc0"),
        (("pdm", "1.0", None), "CC-PDM-1.0", "pdm"),
        (("CC BY-SA 3.0 de", None, None), "CC-BY-SA-3.0-DE", "by-sa"),
        (("CC BY-SA 2.5,2.0,1.0", None, None), "CC-BY-SA-2.5", "by-sa"),
        ((None, None, "https://creativecommons.org/licenses/by-nd/4.0/"), "CC-BY-ND-4.0", "by-nd"),
        (("CC0", None, "http://creativecommons.org/publicdomain/zero/1.0/deed.en"), "CC0-1.0",
         "cc0"),
        (("Public domain", None, None), "public-domain", "public-domain"),
        (("GFDL", None, "http://www.gnu.org/copyleft/fdl.html"), "other", "other"),
        ((None, None, None), "unknown", "unknown"),
    ],
)  # fmt: skip
def test_licences_are_normalised_to_spdx_like_ids(said, expected, fam):
    assert normalise(*said) == expected
    assert family(expected) == fam


def test_attribution_text_names_title_creator_licence_and_where():
    assert attribution_text("Cat", "Jo", "CC-BY-4.0", "https://l", "Wikimedia Commons") == (
        '"Cat" by Jo is licensed under CC BY 4.0 (https://l), via Wikimedia Commons.'
    )
    assert attribution_text(None, None, "unknown", None) == "This image."


def test_openverse_is_asked_for_the_configured_licences_only_and_keywords_are_encoded():
    profile = BUILTIN["openverse"]
    url = request_url(profile, "고양이 photo", None, ("cc0", "by", "unknown"))
    assert url.startswith("https://api.openverse.org/v1/images/?q=%EA%B3%A0")
    assert "page=1&page_size=20&license=cc0%2Cby" in url
    assert "license=" not in request_url(profile, "cat", 2, FAMILIES)
    # anonymous clients get at most 20 a page; with a token, more
    big = dataclass_replace(profile, page_size=50)
    assert "page_size=20" in request_url(big, "cat", None, FAMILIES)
    assert "page_size=50" in request_url(big, "cat", None, FAMILIES, authenticated=True)
    wiki = request_url(BUILTIN["wikimedia"], "red panda", 50, FAMILIES)
    assert "gsrnamespace=6" in wiki and "gsrsearch=red+panda" in wiki and "gsroffset=50" in wiki
    assert "iiprop=url%7Cextmetadata" in wiki


# ---- config ----------------------------------------------------------------------------------


def test_crawl_licenses_accepts_known_families_and_names_the_key_otherwise(tmp_path):
    cfg = Config.from_mapping({"crawl": {"licenses": ["cc0", "by"]}}, base_dir=tmp_path)
    assert cfg.crawl.licenses == ["cc0", "by"]
    assert Config().crawl.licenses == list(FAMILIES)
    with pytest.raises(ConfigError, match=r"crawl\.licenses.*'cc0'"):
        Config.from_mapping({"crawl": {"licenses": ["cc-by"]}}, base_dir=tmp_path)


def test_an_api_profile_needs_a_known_api_and_an_url():
    from core.errors import BadProfileError

    custom = profile_from_mapping(
        "mine", {"kind": "api", "api": "openverse", "api_url": "https://ov.example.org"}
    )
    assert custom.kind == "api" and custom.per_day == 0
    with pytest.raises(BadProfileError, match="crawl.profiles.x.api: required"):
        profile_from_mapping("x", {"kind": "api", "api_url": "https://a"})
    with pytest.raises(BadProfileError, match="api_url"):
        profile_from_mapping("x", {"kind": "api", "api": "wikimedia"})
    with pytest.raises(BadProfileError, match="per_day"):
        profile_from_mapping("openverse", {"per_day": -1}, BUILTIN["openverse"])


def test_the_starter_config_turns_the_open_licence_apis_on(tmp_path):
    from core.config import write_starter_config

    text = write_starter_config(tmp_path / "pingo.toml").read_text()
    cfg = load_config(tmp_path / "pingo.toml")
    assert cfg.crawl.sources == ["demo", "openverse", "wikimedia"]
    assert "OPENVERSE_CLIENT_ID" in text and "crawl.user_agent" in text


# ---- budgets ---------------------------------------------------------------------------------


def test_a_local_budget_paces_counts_the_day_and_survives_the_next_crawl(tmp_path):
    now = [86400.0 * 20_000 + 10]
    path = tmp_path / "cache" / "api-budget.json"
    budget = LocalBudget(path, clock=lambda: now[0])
    limits = Limits(per_minute=20, per_day=3)
    assert budget.acquire("ov", limits).kind == "go"
    wait = budget.acquire("ov", limits)
    assert wait.kind == "wait" and wait.seconds == pytest.approx(3.0)
    now[0] += 3
    assert budget.acquire("ov", limits).kind == "go"
    # the next crawl (a new process) reads what this one spent
    again = LocalBudget(path, clock=lambda: now[0])
    now[0] += 3
    assert again.acquire("ov", limits).kind == "go"
    now[0] += 3
    spent = again.acquire("ov", limits)
    assert spent.kind == "spent" and again.used_today("ov") == 3
    assert spent.seconds == pytest.approx(86400 - 19, abs=1)
    now[0] += spent.seconds  # the next UTC day
    assert again.acquire("ov", limits).kind == "go"
    # where a query's pages left off survives too, beside the budgets
    again.remember("openverse:cat", 3)
    assert LocalBudget(path, clock=lambda: now[0]).cursor("openverse:cat") == 3
    # a Retry-After pause holds everyone back
    again.pause("ov", 30)
    now[0] += 10
    paused = again.acquire("ov", limits)
    assert paused.kind == "wait" and paused.seconds == pytest.approx(20)


def test_workers_share_one_redis_budget(redis_prefix):
    """Two crawlers (two connections) draw on one day's quota and one pace, on Redis's clock."""
    import threading

    import redis
    from conftest import REDIS_URL

    budgets = [RedisBudget(redis.Redis.from_url(REDIS_URL), redis_prefix) for _ in range(2)]
    verdicts: list[str] = []

    def worker(budget):
        for _ in range(10):
            verdicts.append(budget.acquire("openverse:host:anon", Limits(per_day=7)).kind)

    threads = [threading.Thread(target=worker, args=(b,)) for b in budgets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts.count("go") == 7 and verdicts.count("spent") == 13
    assert budgets[1].used_today("openverse:host:anon") == 7

    paced = Limits(per_minute=60)
    assert budgets[0].acquire("wiki", paced).kind == "go"
    other = budgets[1].acquire("wiki", paced)
    assert other.kind == "wait" and 0.5 < other.seconds <= 1.0
    budgets[1].pause("p", 2.0)
    held = budgets[0].acquire("p", Limits())
    assert held.kind == "wait" and 1.5 < held.seconds <= 2.0
    # where a query's pages left off, for whichever worker asks next
    budgets[0].remember("openverse:cat", 4)
    assert budgets[1].cursor("openverse:cat") == 4
    budgets[1].remember("openverse:cat", None)
    assert budgets[0].cursor("openverse:cat") is None


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after(b"7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10)
    assert retry_after(None) is None and retry_after(b"soon") is None


# ---- crawls against the served answers -------------------------------------------------------


def test_a_crawl_pages_both_apis_into_the_inbox_with_licences(project, api, run_cli):
    """Hyphens and spaces in class names, a non-ASCII keyword and one with a space: every
    class gets what it lacks, paging Openverse (10 results in 3 pages) then Wikimedia."""
    project.write(
        api_toml(api.url, {"red-panda": (["고양이"], 12), "house cat": (["tabby cat"], 12)})
    )
    summary = crawl(project.config)

    assert {n: c.downloaded for n, c in summary.classes.items()} == {
        "red-panda": 12,
        "house cat": 12,
    }
    assert "selenium/page_count" not in summary.stats  # no browser for API sources
    pages = sorted((r.params["q"], r.params["page"]) for r in searches(api, "openverse"))
    assert pages == [(q, p) for q in ("tabby cat", "고양이") for p in ("1", "2", "3")]
    wiki = [(r.params["gsrsearch"], r.params["gsroffset"]) for r in searches(api, "wikimedia")]
    assert sorted(wiki) == [("tabby cat", "0"), ("고양이", "0")]
    assert all(r.headers["User-Agent"] == CONTACT_UA for r in api.requests)

    stored = rows(project)
    assert len(stored) == 24
    for r in stored:
        assert r["license"] in SERVED_LICENSES
        assert r["attribution"] and r["source_url"].startswith(api.url + "/img/" + r["source"])
    by_url = {unquote(r["source_url"].split("/img/")[1]): r for r in stored}
    jane = by_url["openverse/고양이/p1-1.png"]
    assert (jane["keyword_class"], jane["query"], jane["creator"], jane["title"]) == (
        "red-panda",
        "고양이",
        "Jane Doe",
        "Tabby cat on a windowsill",
    )
    assert jane["license_url"] == "https://creativecommons.org/licenses/by/2.0/"
    assert jane["page_url"] == f"{api.url}/landing/flickr/%EA%B3%A0%EC%96%91%EC%9D%B4/1"
    example = by_url["wikimedia/tabby cat/w0-2-1280px.png"]
    assert (example["keyword_class"], example["creator"], example["license"]) == (
        "house cat",
        "Example & Friends",
        "CC-BY-SA-4.0",
    )

    # pingo images --json carries the licence columns
    result = run_cli("images", "--json", "--class", "red-panda")
    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in result.output.splitlines()]
    assert len(exported) == 12
    assert {unquote(e["source_url"].split("/img/")[1]): e["attribution"] for e in exported}[
        "openverse/고양이/p1-1.png"
    ] == jane["attribution"]


def test_licence_filter_asks_openverse_and_drops_wikimedia_results_before_download(project, api):
    project.write(
        api_toml(api.url, {"cat": (["cat"], 50)}, licenses=["cc0", "by", "public-domain"])
    )
    summary = crawl(project.config)

    assert {r.params.get("license") for r in searches(api, "openverse")} == {"cc0,by"}
    stored = rows(project)
    assert stored and all(family(r["license"]) in ("cc0", "by", "public-domain") for r in stored)
    fetched = {r.path.rsplit("/", 1)[1] for r in api.seen("/img/wikimedia/")}
    # by-sa (w0-2) and the file with no licence (w3-5) were never downloaded
    assert fetched == {"w0-1-1280px.png", "w0-3-1280px.png", "w3-4-1280px.png"}
    assert summary.stats["pingo/source/wikimedia/license_filtered"] == 2
    # Openverse filtered on its side: 5 of its 10 results are CC0 or CC BY
    assert summary.classes["cat"].downloaded == len(stored) == 5 + 3


def test_a_429_waits_out_retry_after_then_asks_again(project, api):
    body = (FIXTURES / "openverse_throttled.json").read_bytes()
    api.faults.append(("/openverse/v1/images/", 429, {"Retry-After": "1"}, body))
    project.write(api_toml(api.url, {"cat": (["cat"], 4)}, sources=["openverse"]))
    summary = crawl(project.config)

    first, second = searches(api, "openverse")[:2]
    assert first.params["page"] == second.params["page"] == "1"
    assert second.at - first.at >= 1.0
    assert summary.stats["pingo/source/openverse/backoffs"] == 1
    assert summary.classes["cat"].downloaded == 4


def test_a_spent_daily_quota_stops_the_source_until_the_next_day(project, api):
    """per_day = 2: two searches, then the message; the next crawl the same day asks nothing;
    on the next day it resumes. Wikimedia, with pingo's default user agent, is not started."""
    project.write(
        api_toml(
            api.url,
            {"cat": (["cat"], 30)},
            openverse={"per_day": 2},
            user_agent=Config().crawl.user_agent,
        )
    )
    summary = crawl(project.config)

    assert len(searches(api, "openverse")) == 2 and not searches(api, "wikimedia")
    assert summary.stats["pingo/source/openverse/stopped"] == (
        "openverse: daily quota spent (2 requests); resumes on the next scheduled crawl"
    )
    assert "set crawl.user_agent" in summary.stats["pingo/source/wikimedia/stopped"]
    assert summary.classes["cat"].downloaded == 8

    again = crawl(project.config)
    assert len(searches(api, "openverse")) == 2  # nothing asked
    assert again.stats["pingo/source/openverse/stopped"].startswith("openverse: daily quota")

    budget_file = project.data_dir / "cache" / "api-budget.json"
    state = json.loads(budget_file.read_text())
    assert state["cursors"] == {"openverse:cat": 3}  # where the next crawl goes on
    (key,) = set(state) - {"cursors"}
    assert key.startswith("openverse:127.0.0.1:") and key.endswith(":anon")
    state[key]["day"] -= 1  # as if the crawl had run yesterday
    budget_file.write_text(json.dumps(state))
    resumed = crawl(project.config)
    # a new day: the query goes on at page 3 (its last), not at pages already read
    assert [r.params["page"] for r in searches(api, "openverse")] == ["1", "2", "3"]
    assert resumed.stats["pingo/source/openverse/resumed"] == 1
    assert resumed.classes["cat"].downloaded == 2
    # past the last page: the next crawl starts the query over
    assert not json.loads(budget_file.read_text())["cursors"]


def test_a_long_retry_after_stops_that_source_and_the_other_fills_the_class(project, api):
    api.faults.append(("/openverse/v1/images/", 429, {"Retry-After": "3600"}, b"{}"))
    project.write(api_toml(api.url, {"cat": (["cat"], 4)}))
    started = time.monotonic()
    summary = crawl(project.config)

    assert time.monotonic() - started < 60
    assert summary.stats["pingo/source/openverse/stopped"] == (
        "openverse: rate limited (HTTP 429, Retry-After 3600 s); resumes on the next "
        "scheduled crawl"
    )
    assert {r["source"] for r in rows(project)} == {"wikimedia"}
    assert summary.classes["cat"].downloaded == 4


def test_errors_and_empty_answers_are_recorded_per_source(project, api):
    api.faults.append(("/openverse/v1/images/", 500, {}, b"oops"))
    api.faults.append(("/wikimedia/w/api.php", 200, {}, b"<html>not json</html>"))
    project.write(api_toml(api.url, {"cat": (["cat"], 3)}, openverse={"per_minute": 0}))
    summary = crawl(project.config, settings={"PINGO_API_RETRIES": 0})

    assert summary.stats["pingo/source/openverse/page_errors"] == 1
    # each source's failure is told apart by its cause (crawler.causes), with the detail
    openverse, wikimedia = summary.sources["openverse"], summary.sources["wikimedia"]
    assert openverse["cause"] == "http_error" and "HTTP 500" in openverse["last_error"]
    assert wikimedia["cause"] == "error" and "not JSON" in wikimedia["last_error"]
    assert set(summary.empty_sources) == {"openverse", "wikimedia"}
    assert summary.classes["cat"].downloaded == 0


def test_wikimedia_alone_with_the_default_user_agent_is_refused_with_what_to_set(project, api):
    project.write(
        api_toml(
            api.url,
            {"cat": (["cat"], 3)},
            sources=["wikimedia"],
            user_agent=Config().crawl.user_agent,
        )
    )
    with pytest.raises(SourceRefusedError, match=r"set crawl\.user_agent in pingo\.toml"):
        crawl(project.config)
    assert not api.requests


def test_openverse_client_credentials_get_a_token_used_on_every_search(project, api, monkeypatch):
    api.clients["my-client"] = "s3cret"
    monkeypatch.setenv("OPENVERSE_CLIENT_ID", "my-client")
    monkeypatch.setenv("OPENVERSE_CLIENT_SECRET", "s3cret")
    project.write(api_toml(api.url, {"cat": (["cat"], 10)}, sources=["openverse"]))
    summary = crawl(project.config)

    (token,) = api.seen("/openverse/v1/auth_tokens/token/")
    assert token.method == "POST" and token.params["grant_type"] == "client_credentials"
    found = searches(api, "openverse")
    assert len(found) == 3
    assert {r.headers.get("Authorization") for r in found} == {
        "Bearer DLBYIcfnKfolaXKcmMC8RIDCavc2hW"
    }
    assert summary.classes["cat"].downloaded == 10

    monkeypatch.setenv("OPENVERSE_CLIENT_SECRET", "wrong")
    project.write(api_toml(api.url, {"cat": (["cat"], 20)}, sources=["openverse"]))
    refused = crawl(project.config)
    assert (
        "no token for OPENVERSE_CLIENT_ID (HTTP 401"
        in (refused.stats["pingo/source/openverse/stopped"])
    )
    assert len(searches(api, "openverse")) == 3  # no search went out without it


def test_a_distributed_crawl_draws_on_the_redis_budget(project, api, redis_prefix):
    import redis
    from conftest import REDIS_URL

    project.write(
        api_toml(
            api.url,
            {"cat": (["cat"], 30)},
            sources=["openverse"],
            openverse={"per_day": 2},
            redis_url=REDIS_URL,
            redis_key_prefix=f"{redis_prefix}:frontier",
            idle_timeout=2.0,
        )
    )
    budgets = f"{redis_prefix}:api"
    summary = crawl(project.config, settings={"PINGO_API_BUDGET_PREFIX": budgets})

    assert len(searches(api, "openverse")) == 2
    assert summary.stats["pingo/source/openverse/stopped"].startswith(
        "openverse: daily quota spent (2 requests)"
    )
    stored = rows(project)  # through the shared queue, licence and all
    assert len(stored) == 8 and all(r["license"] in SERVED_LICENSES for r in stored)
    assert all(r["attribution"] and r["creator"] for r in stored)
    server = redis.Redis.from_url(REDIS_URL)
    (day_key,) = server.keys(f"{budgets}:openverse:*:day:*")
    assert int(server.get(day_key)) == 2


def test_attribution_files_list_every_accepted_image(project, api, run_cli):
    project.write(api_toml(api.url, {"red-panda": (["고양이"], 5)}, sources=["wikimedia"]))
    crawl(project.config)
    with project.store() as store:
        for row in store.iter_images(status="inbox"):
            store.move(row["id"], "accepted", label=row["keyword_class"])
    result = run_cli("attribution")
    assert result.exit_code == 0, result.output
    assert "credits for 5 accepted images" in result.output
    dataset = project.data_dir / "dataset"
    md = (dataset / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "## red-panda" in md and '"Domestic cat (2019)" by Example & Friends' in md
    import csv

    with open(dataset / "attribution.csv", encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 and {t["class"] for t in table} == {"red-panda"}
    assert {t["license"] for t in table} == {
        "public-domain",
        "CC-BY-SA-4.0",
        "CC-BY-3.0-DE",
        "CC0-1.0",
        "unknown",
    }
    # pingo check knows the two files beside the class folders
    check = run_cli("check")
    assert "unknown_file" not in check.output, check.output
    # and the report shows the licence mix per class
    from pingo.report import build_report

    with project.store() as store:
        page = build_report(project.config, store).read_text(encoding="utf-8")
    assert "<h2>Licences</h2>" in page and "CC-BY-SA-4.0: 1" in page


def dataclass_replace(profile: SourceProfile, **changes) -> SourceProfile:
    import dataclasses

    return dataclasses.replace(profile, **changes)


def test_fixture_files_are_valid_json():
    for path in Path(FIXTURES).glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
