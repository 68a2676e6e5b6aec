"""The spoken dialogue: listening turns, the listen/speak state machine, sessions and scheduling."""
