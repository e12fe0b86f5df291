"""`convscope data download NAME` and `convscope data list`."""


def cmd_data_download(args):
    """Fetch a data set's official files, checked against their published MD5s, into its cache folder."""
    from convscope.data.download import dataset_key, download

    folder = download(args.name, args.dir, base_url=args.mirror)
    name = dataset_key(args.name)
    data_dir = f" --data-dir {folder}" if args.dir else ""
    print(f"{name}: ready in {folder}")
    print(f"use it with: convscope train --dataset {name}{data_dir}")


def cmd_data_list(args):
    """The data sets by name, and where the downloadable ones are cached."""
    from convscope.data.download import CHECKSUMS, cache_dir, cache_root, is_downloaded

    print(f"{'digits':15} bundled with scikit-learn (offline)")
    for name in CHECKSUMS:
        state = "downloaded" if is_downloaded(name) else "not downloaded"
        print(f"{name:15} {state:15} {cache_dir(name)}")
    print(f"{'folder:PATH':15} your images: PATH/CLASS/*.png|jpg, one subfolder per class")
    print(f"cache folder: {cache_root()} (set CONVSCOPE_DATA to move it)")


def add_commands(commands):
    """`convscope data download NAME` and `convscope data list`."""
    from convscope.data.download import CHECKSUMS

    data = commands.add_parser("data", help="download MNIST, Fashion-MNIST or CIFAR-10; list the data sets")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    download = actions.add_parser(
        "download",
        help="fetch a data set's official files, check their MD5s, cache them",
        description="Fetch the official files (resuming and retrying), check them against their published "
        "MD5s and put them in the cache folder ($CONVSCOPE_DATA/NAME, else ~/.cache/convscope/NAME), "
        "where --dataset NAME finds them without --data-dir.",
    )
    download.add_argument("name", metavar="NAME", help=f"one of: {', '.join(CHECKSUMS)}")
    download.add_argument("--dir", help="put the files here instead of the cache folder")
    download.add_argument("--mirror", metavar="URL", help="fetch the files from this base URL instead")
    download.set_defaults(run=cmd_data_download)
    listing = actions.add_parser("list", help="the data sets and where the downloadable ones are cached")
    listing.set_defaults(run=cmd_data_list)
