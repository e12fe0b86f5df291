"""See inside a convolutional network: classic kernels, feature maps, learned kernels, top patches.

Modules, each small and importable on its own (matplotlib is imported only when a figure is drawn,
so `import convscope` stays fast):

- `kernels`        classic hand-made kernels (vertical_line, sobel_x, ...) and a parser for typed ones
- `convolve`       one kernel over one photo with the engine's own conv op, and its figure
- `receptive`      receptive field size, stride and offset of every layer, through conv and pool
- `patches`        the image patches that excite each kernel most (top_patches)
- `feature_maps`   figures of the input, its channels and every layer's output block
- `learned`        figures of a trained model's kernels
- `plots`          training curves, confusion matrix, most confident mistakes, softmax bars
- `story`          one image through one model, as an ordered list of report sections
- `report`         those sections as a single self-contained report.html
"""
