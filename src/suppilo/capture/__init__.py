"""Capture: hosted and embeddable forms, the tracking snippet and the image pixel."""
