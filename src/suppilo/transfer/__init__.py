"""CSV import (contacts, companies, products, orders) and CSV/JSON export."""
