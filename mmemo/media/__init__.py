"""Media: which files are clips (``files``), the 25 fps grid (``grid``), decoding a file (``decode``) and live
sources (``live``) onto that grid; synthetic clips for the demo and the tests (``synth``). No torch here."""
