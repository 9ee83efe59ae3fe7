"""Product recommendations: often bought together, customers like you also bought, best-sellers."""
