"""Using a trained model: checkpoints, user images, TTA, predict, export, saliency maps, the demo page."""
