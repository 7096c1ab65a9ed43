"""SAM and ViTDet as Detectron2 components: the ViT, SAM's encoder/prompt encoder/decoder, the
pure ``Sam``, click simulation, edge map, checkpoint placement and the meta-architectures."""
