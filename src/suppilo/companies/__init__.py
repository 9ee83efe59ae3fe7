"""Companies (accounts) that contacts belong to."""
