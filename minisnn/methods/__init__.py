"""One module per paper: eventrpg, asa, staa, hsd, razor."""
