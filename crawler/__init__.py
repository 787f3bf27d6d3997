"""crawler: Scrapy project, spiders, Selenium middleware, image pipeline, demo search site."""
