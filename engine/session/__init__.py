"""One query's secure computation at one party: MPyC session set-up, channels, the plan runner."""
