"""The party server: one long-running process per party, serving its analysts and its peers."""
