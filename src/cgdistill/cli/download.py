"""`cgdistill download`: datasets and official pretrained generators (filled in by the data issue)."""
