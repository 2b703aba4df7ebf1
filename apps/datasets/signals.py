"""What other apps may follow of a dataset's life without the datasets app knowing them."""

from django.dispatch import Signal

# A dataset whose files came after it (an upload finalized) is ready now: `dataset=` the row.
# Sent once it is committed; a receiver that fails is logged, the dataset stays ready.
dataset_ready = Signal()
