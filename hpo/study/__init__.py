"""Study bookkeeping: create, load, list and delete studies, with their spec stored inside
(``studies``), and the one schema of study and trial attributes (``attrs``)."""
