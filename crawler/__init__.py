"""crawler: fills the inbox for classes below target.

Selenium renders search-result pages (off Scrapy's reactor thread, on a small pool of
browsers); Scrapy's own downloader fetches the images; the image pipeline stores the original
bytes through storage. Entry points: ``crawler.run.crawl`` and ``crawler.demo_site``.
"""
