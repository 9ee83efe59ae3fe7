"""Commerce records: products, orders with lines, refunds and carts."""
