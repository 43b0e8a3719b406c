"""Pure ML layer of archscreen: specs, datasets, Alrao, training.

Never imports the web, queue or storage layers.
"""
