"""Study bookkeeping: create, load, list and delete studies, with their spec stored inside."""
