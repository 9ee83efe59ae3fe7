"""Events (Segment-spec tracking), touches (attributed sources) and channel rules."""
