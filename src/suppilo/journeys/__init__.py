"""Journeys: versioned automation definitions, durable enrollments and the runner that advances them."""
