"""Advocacy: referral programme (codes, attribution with abuse guards, rewards), NPS/CSAT surveys answered by signed
one-click links, and moderated reviews exportable for the website."""
