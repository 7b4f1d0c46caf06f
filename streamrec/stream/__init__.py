"""The stream worker: faust app (thin) around the batch processor (logic)."""
