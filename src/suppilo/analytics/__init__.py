"""Analytics: exchange rates, marketing spend and the reports (funnel, spend, attribution, CLV, cohorts, tests)."""
