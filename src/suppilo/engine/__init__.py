"""Pure core: no database, web, environment, wall clock or randomness; those come in as arguments."""
