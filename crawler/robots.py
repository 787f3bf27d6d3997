"""robots.txt, decided per request, and a refusal that names the rule and the deciding key.

Scrapy's RobotsTxtMiddleware obeys robots.txt for every request or for none. Here each
request may carry its own decision in ``meta["pingo_obey_robots"]`` (the spider sets it for
a source's result pages from ``[crawl.profiles.X] obey_robots``, else ``crawl.obey_robots``);
requests without one (image downloads) follow ROBOTSTXT_OBEY (``crawl.obey_robots``). A
refusal is a :class:`RobotsRefused` that says which robots.txt rule matched and which config
key decided to obey it, so the crawl summary can tell the user exactly that.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.misc import build_from_crawler, load_object

logger = logging.getLogger(__name__)

OBEY_META = "pingo_obey_robots"  # bool: obey robots.txt for this request
DECIDED_BY_META = "pingo_robots_key"  # the config key that decided it, for the message
SOURCE_ROBOTS_META = "pingo_source_robots"  # a robots.txt fetched for a source's result page


def _is_page(request) -> bool:
    from crawler.selenium_request import SeleniumRequest

    return isinstance(request, SeleniumRequest)


class RobotsRefused(IgnoreRequest):
    """robots.txt disallows the URL. The message starts like Scrapy's ("Forbidden by
    robots.txt") so code that reads that text (refusal reasons) keeps working."""

    reason = "robots"

    def __init__(self, url: str, rule: str | None, agent: str, decided_by: str):
        self.url, self.rule, self.agent, self.decided_by = url, rule, agent, decided_by
        super().__init__(f"Forbidden by robots.txt: {self.explain()}")

    def explain(self) -> str:
        host = urlsplit(self.url).netloc
        path = urlsplit(self.url).path or "/"
        rule = f'rule "{self.rule}" for user agent {self.agent}' if self.rule else "its rules"
        return f"robots.txt of {host} disallows {path} ({rule}); decided by {self.decided_by}"


def matching_rule(robots_txt: str, agent: str, url: str) -> tuple[str | None, str]:
    """The Allow/Disallow line of ``robots_txt`` that decides ``url`` for ``agent`` (the
    longest match in the group for that agent, else in ``*``), and that group's name."""
    groups: list[tuple[list[str], list[tuple[str, str]]]] = []
    agents: list[str] = []
    rules: list[tuple[str, str]] = []
    for raw in robots_txt.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, value = (p.strip() for p in line.split(":", 1))
        key = key.lower()
        if key == "user-agent":
            if rules:  # a new group starts
                groups.append((agents, rules))
                agents, rules = [], []
            agents.append(value.lower())
        elif key in ("allow", "disallow") and agents:
            rules.append((key.capitalize(), value))
    if agents:
        groups.append((agents, rules))
    token = agent.split("/", 1)[0].strip().lower()
    chosen = next((g for g in groups if any(a != "*" and a in token for a in g[0])), None)
    chosen = chosen or next((g for g in groups if "*" in g[0]), None)
    if chosen is None:
        return None, "*"
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    best: tuple[int, str] | None = None
    for kind, pattern in chosen[1]:
        if not pattern:
            continue
        regex = re.escape(pattern).replace(r"\*", ".*")
        if regex.endswith(r"\$"):
            regex = regex[:-2] + "$"
        if re.match(regex, path) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), f"{kind}: {pattern}")
    name = next((a for a in chosen[0] if a != "*"), "*")
    return (best[1] if best else None), name


class SourceRobotsMiddleware(RobotsTxtMiddleware):
    """Replaces Scrapy's RobotsTxtMiddleware (at its place, 100). Always installed: a source
    may obey robots.txt when crawl.obey_robots is off, and the other way round."""

    def __init__(self, crawler):  # Scrapy's, without its "off unless ROBOTSTXT_OBEY"
        settings = crawler.settings
        self._obey_default = settings.getbool("ROBOTSTXT_OBEY")
        self._default_useragent = settings["USER_AGENT"]
        self._robotstxt_useragent = settings["ROBOTSTXT_USER_AGENT"]
        self.crawler = crawler
        self._stats = crawler.stats
        self._parsers = {}
        self._parserimpl = load_object(settings.get("ROBOTSTXT_PARSER"))
        build_from_crawler(self._parserimpl, crawler, b"")
        self._bodies: dict[str, str] = {}  # netloc -> robots.txt text, to name the rule

    async def process_request(self, request, spider=None):
        obey = request.meta.get(OBEY_META, self._obey_default)
        if not obey or request.meta.get("dont_obey_robotstxt"):
            return None
        if request.url.startswith(("data:", "file:")):
            return None
        parser = await self.robot_parser(request)
        if parser is None:
            return None
        agent = self._robotstxt_useragent or request.headers.get(
            b"User-Agent", self._default_useragent
        )
        if parser.allowed(request.url, agent):
            return None
        self._stats.inc_value("robotstxt/forbidden")
        agent_text = agent.decode() if isinstance(agent, bytes) else str(agent)
        netloc = urlsplit(request.url).netloc
        rule, group = matching_rule(self._bodies.get(netloc, ""), agent_text, request.url)
        decided_by = request.meta.get(DECIDED_BY_META) or (
            f"crawl.obey_robots = {str(self._obey_default).lower()}"
        )
        raise RobotsRefused(request.url, rule, group, decided_by)

    async def robot_parser(self, request):
        """Scrapy's, but a robots.txt that cannot be fetched is one WARNING line (the page's
        own request then fails with the cause the summary reports), not an ERROR with a
        traceback."""
        from scrapy import Request
        from scrapy.http.request import NO_CALLBACK
        from scrapy.utils.defer import maybe_deferred_to_future
        from twisted.internet.defer import Deferred

        netloc = urlsplit(request.url).netloc
        if netloc not in self._parsers:
            self._parsers[netloc] = Deferred()
            robots = Request(
                f"{urlsplit(request.url).scheme}://{netloc}/robots.txt",
                priority=self.DOWNLOAD_PRIORITY,
                # A result page's robots.txt comes from a configured source, like the page
                # itself: the private-address guard lets it through (crawler.netguard).
                meta={"dont_obey_robotstxt": True, SOURCE_ROBOTS_META: _is_page(request)},
                callback=NO_CALLBACK,
            )
            try:
                response = await self.crawler.engine.download_async(robots)
                await self._parse_robots(response, netloc, request)
            except Exception as exc:
                if not isinstance(exc, IgnoreRequest):
                    logger.warning(
                        "robots.txt of %s not read (%s: %s); its rules are not applied",
                        netloc,
                        type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "",
                    )
                self._robots_error(exc, netloc)
            self._stats.inc_value("robotstxt/request_count")
        parser = self._parsers[netloc]
        if isinstance(parser, Deferred):
            return await maybe_deferred_to_future(parser)
        return parser

    async def _parse_robots(self, response, netloc, request):
        self._bodies[netloc] = response.body.decode("utf-8", "replace")
        await super()._parse_robots(response, netloc, request)
