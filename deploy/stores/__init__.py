"""`stores`: connect a Shopify shop or a WooCommerce site in one command; check every store's connection."""
