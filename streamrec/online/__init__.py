"""Online learning: fine-tune the sequence model from the stream, grow its item vocabulary,
evaluate prequentially, and promote/roll back versions through the registry under a guard."""
