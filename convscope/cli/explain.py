"""`convscope convolve` and `convscope explain`: look inside a convolution and a trained network."""

from convscope.cli.options import (
    REPORT_TITLE,
    check_dataset_fits,
    load_split,
    non_negative_int,
    padding,
    positive_int,
    report_lead,
)

DEFAULT_PATCH_IMAGES = 2000


def cmd_convolve(args):
    """Slide one kernel over one image with the engine's conv op and draw input, kernel, feature map."""
    from convscope.explain.convolve import convolution_figure, convolve_image, read_photo, sample_photo
    from convscope.explain.figures import figure_png, save_png
    from convscope.explain.kernels import get_kernel

    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must name a .png file, got {args.out!r}")
    label, kernel = get_kernel(args.kernel)
    if args.image is None:
        image, notes = sample_photo(), ["scikit-learn's sample photo china.jpg"]
        if args.gray:
            image = image.mean(axis=2, keepdims=True)
    else:
        image, notes = read_photo(args.image, max_side=args.max_side, gray=args.gray)
    feature_map = convolve_image(image, kernel, args.padding, args.stride, per_channel=args.per_channel)
    fig = convolution_figure(image, kernel, feature_map, args.padding, args.stride, label)
    save_png(figure_png(fig), args.out)
    for note in notes:
        print(f"  {note}")
    print(
        f"{'x'.join(map(str, image.shape))} -> {'x'.join(map(str, feature_map.shape))} "
        f"(kernel {label}, padding {args.padding}, stride {args.stride})"
    )
    print(f"wrote {args.out}")


def _explain_image(args, model, dataset):
    """The image to explain, (H, W, C), and notes on where it came from: a file or a data-set index."""
    from convscope.data.images import read_image

    if args.image is not None:
        if args.index is not None:
            raise ValueError("give an IMAGE file or --index, not both")
        return read_image(args.image, model.input_shape, invert=args.invert)
    if dataset is None:
        raise ValueError(
            f"give an IMAGE file, or --dataset (and --data-dir) with --index: no data set is bundled for "
            f"{'x'.join(map(str, model.input_shape))} inputs"
        )
    split = load_split(dataset, args.data_dir, args.split, args, model.input_shape)
    check_dataset_fits(model, split, dataset)
    index = 0 if args.index is None else args.index
    if not 0 <= index < len(split.labels):
        raise ValueError(
            f"--index {index} is out of range: the {args.split} split of {dataset} "
            f"has {len(split.labels)} images"
        )
    notes = [f"{args.split} image {index} of {dataset}, true class {split.class_names[split.labels[index]]}"]
    return split.images[index], notes


def cmd_explain(args):
    """Write report.html (and one PNG per figure) showing one image going through a saved model."""
    from convscope import load_model
    from convscope.explain.report import write_report
    from convscope.explain.story import explain_sections

    model = load_model(args.model)
    if args.why:  # a wrong class or layer is reported before any work
        from convscope.explain.attribution import resolve_layer, resolve_target

        resolve_target(model, args.target)
        if "gradcam" in (args.method or ("gradcam",)):
            resolve_layer(model, args.layer)
    dataset = args.dataset or ("digits" if tuple(model.input_shape) == (8, 8, 1) else None)
    image, notes = _explain_image(args, model, dataset)
    patch_images = None
    if dataset is not None and args.patch_images > 0:
        source = load_split(dataset, args.data_dir, "train", args, model.input_shape)
        check_dataset_fits(model, source, dataset)
        patch_images = source.images[: args.patch_images]
        print(f"top patches: searching the first {len(patch_images)} training images of {dataset}")
    else:
        print("top patches: skipped (give --dataset and --data-dir to search a data set)")
    for note in notes:
        print(f"  {note}")
    sections = explain_sections(model, image, notes, patch_images)
    if args.why:
        labels = None if patch_images is None else source.labels[: len(patch_images)]
        _add_why(args, model, image, sections, patch_images, labels)
    path = write_report(sections, args.out, REPORT_TITLE, report_lead(model))
    print(f"report: {path}")


def _add_why(args, model, image, sections, sample_images, sample_labels):
    """--why: attribution, activation maximisation, network health and snapshots; printed and reported."""
    from convscope.explain.health import health_lines
    from convscope.explain.maximize import Settings
    from convscope.explain.why import add_why_sections

    options = {"seed": args.seed}
    for name, value in (("size", args.occlusion_size), ("stride", args.occlusion_stride)):
        if value is not None:
            options[name] = value
    if args.smoothgrad_samples is not None:
        options["samples"] = args.smoothgrad_samples
    settings = Settings(steps=args.maximize_steps, seed=args.seed) if args.maximize_steps else None
    result = add_why_sections(
        sections,
        model,
        image,
        methods=tuple(dict.fromkeys(args.method or ("gradient", "smoothgrad", "gradcam", "occlusion"))),
        target=args.target,
        layer=args.layer,
        sample_images=sample_images,
        sample_labels=sample_labels,
        settings=settings,
        attribution_options=options,
    )
    first = result["attributions"][0]
    print(
        f"why: predicted {model.class_names[first.predicted] if model.class_names else first.predicted}, "
        f"explaining class {first.class_name} (probability {first.probability:.4f})"
    )
    for item in result["attributions"]:
        where = f" on {item.layer}" if item.layer else ""
        print(
            f"  {item.method}{where}: {item.seconds * 1000:.1f} ms, peak at row {item.peak()[0]}, "
            f"column {item.peak()[1]}"
        )
    for name, seconds in result["timings"].items():
        if name.startswith("maximize") or name == "health":
            print(f"  {name}: {seconds:.2f} s")
    if result["health"] is None:
        print("network health: skipped (give --dataset and --data-dir for a sample of images)")
    else:
        print("network health:")
        for line in health_lines(result["health"]):
            print(f"  {line}")
        for layer in result["health"]:
            if layer.warning:
                print(f"warning: {layer.warning}")
    snapshots = getattr(model, "snapshots", None)
    if snapshots is not None:
        print(
            f"snapshots: {len(snapshots.steps)} of the first conv layer, epochs 0 to {snapshots.epochs[-1]:g}"
        )


def add_commands(commands):
    """The `convolve` and `explain` commands."""
    from convscope.data import DATASETS

    convolve = commands.add_parser("convolve", help="slide a kernel over an image: input, kernel, output")
    convolve.add_argument("image", nargs="?", help="an image file (default: scikit-learn's sample photo)")
    convolve.add_argument(
        "--kernel",
        default="vertical_line",
        help="a classic kernel (vertical_line, horizontal_line, sobel_x, sobel_y, laplacian, sharpen, "
        "box_blur, gaussian_blur, gaussian_blur_5x5, emboss, identity) or rows like '0 1 0; 0 1 0; 0 1 0' "
        "(default %(default)s)",
    )
    convolve.add_argument(
        "--padding",
        type=padding,
        default="valid",
        help="same, valid or N zero pixels on every side (default %(default)s)",
    )
    convolve.add_argument(
        "--stride", type=positive_int, default=1, help="step of the kernel, in pixels (default %(default)s)"
    )
    convolve.add_argument(
        "--per-channel", action="store_true", help="one map per colour channel instead of their sum"
    )
    convolve.add_argument("--gray", action="store_true", help="convert the image to grayscale first")
    convolve.add_argument(
        "--max-side",
        type=positive_int,
        default=800,
        help="shrink bigger images to this side (default %(default)s)",
    )
    convolve.add_argument(
        "--out", default="convolve.png", help="the figure to write, .png (default %(default)s)"
    )
    convolve.set_defaults(run=cmd_convolve)

    explain = commands.add_parser(
        "explain", help="report.html: one image through a model, feature maps, kernels, top patches"
    )
    explain.add_argument("model", help="a .convscope model file")
    explain.add_argument("image", nargs="?", help="an image file (or use --index)")
    explain.add_argument(
        "--dataset",
        metavar="NAME",
        help=f"data set for --index and for each kernel's top patches: {', '.join(DATASETS)} "
        "(default: the bundled digits when the model takes 8x8x1 images, else none)",
    )
    explain.add_argument("--data-dir", help="folder with the data set's files (IDX for mnist, fashion-mnist)")
    explain.add_argument(
        "--index", type=non_negative_int, help="explain this image of the data set's --split instead (from 0)"
    )
    explain.add_argument(
        "--split",
        choices=("train", "test"),
        default="test",
        help="the split of --index (default %(default)s)",
    )
    explain.add_argument(
        "--patch-images",
        type=non_negative_int,
        default=DEFAULT_PATCH_IMAGES,
        help="how many training images of --dataset to search for each kernel's top patches (default "
        "%(default)s; 0: none)",
    )
    explain.add_argument("--invert", action="store_true", help="invert the image's gray levels first")
    explain.add_argument(
        "--out", default="explain-output", help="folder for report.html and the PNGs (default %(default)s)"
    )
    add_why_arguments(explain)
    explain.set_defaults(run=cmd_explain)


def add_why_arguments(explain):
    """`explain --why` and its options."""
    from convscope.explain.attribution import METHODS

    group = explain.add_argument_group("why (attribution, what kernels want to see, health)")
    group.add_argument(
        "--why",
        action="store_true",
        help="add which pixels decided (attribution maps), what each kernel and class wants to see "
        "(activation maximisation), the network's health and, when recorded, how the kernels grew",
    )
    group.add_argument(
        "--class",
        dest="target",
        metavar="NAME",
        help="the class to explain, by name or index (default: the predicted one)",
    )
    group.add_argument(
        "--layer",
        metavar="NAME",
        help="Grad-CAM's layer (default: the last one with feature maps before the final pooling, the "
        "last conv layer's rectified output)",
    )
    group.add_argument(
        "--method",
        action="append",
        choices=METHODS,
        help="an attribution method; repeat for several (default: all four)",
    )
    group.add_argument(
        "--occlusion-size",
        type=positive_int,
        metavar="PIXELS",
        help="side of the occluding patch (default: about an eighth of the image)",
    )
    group.add_argument(
        "--occlusion-stride",
        type=positive_int,
        metavar="PIXELS",
        help="step of the occluding patch (default: half its size)",
    )
    group.add_argument(
        "--smoothgrad-samples",
        type=positive_int,
        metavar="N",
        help="noisy copies averaged by SmoothGrad (default 50)",
    )
    group.add_argument(
        "--maximize-steps",
        type=non_negative_int,
        default=128,
        metavar="N",
        help="gradient-ascent steps of activation maximisation (default %(default)s; 0: skip it)",
    )
    group.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds SmoothGrad's noise and activation maximisation (default %(default)s)",
    )
