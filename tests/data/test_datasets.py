"""Dataset readers on fixtures written in each dataset's exact on-disk encoding."""
import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.cli import main
from sceneparse.data import Cityscapes, DataError, FolderDataset, PascalVOC
from sceneparse.data.check import check_dataset, format_report
from sceneparse.data.voc import convert_sbd, voc_palette


def _rgb(path, h=8, w=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _palette_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([c for rgb in voc_palette(256) for c in rgb])
    im.save(path)


def test_cityscapes_label_ids_and_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    _rgb(root / "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png", 2, 4)
    ids = np.array([[7, 26, 0, 33], [8, 1, 24, 255]], np.uint8)  # road, car, unlabeled, bicycle / sidewalk...
    lbl = root / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png"
    lbl.parent.mkdir(parents=True)
    Image.fromarray(ids).save(lbl)
    ds = Cityscapes(root, "val")
    assert ds.label_type == "labelIds"
    assert ds[0]["label"].tolist() == [[0, 13, 255, 18], [1, 255, 11, 255]]
    Image.fromarray(np.array([[0, 13, 255, 18], [1, 255, 11, 255]], np.uint8)).save(
        str(lbl).replace("labelIds", "labelTrainIds"))
    ds = Cityscapes(root, "val")
    assert ds.label_type == "trainIds" and ds[0]["label"].tolist() == [[0, 13, 255, 18], [1, 255, 11, 255]]


def test_cityscapes_category_iou():
    from sceneparse.data import Cityscapes
    from sceneparse.evaluation.metrics import category_iou

    conf = torch.zeros(19, 19, dtype=torch.int64)
    conf[0, 1] = 10  # road predicted as sidewalk: wrong class, right category (flat)
    conf[13, 13] = 5
    s = category_iou(conf, Cityscapes.CATEGORIES)
    assert s["IoU_category"]["flat"] == 100.0 and s["IoU_category"]["vehicle"] == 100.0
    assert s["IoU_category"]["sky"] is None


def test_voc_palette_labels_and_sbd_conversion(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    voc = tmp_path / "VOCdevkit/VOC2012"
    seg = voc / "ImageSets/Segmentation"
    seg.mkdir(parents=True)
    (seg / "train.txt").write_text("a\n")
    (seg / "val.txt").write_text("b\n")
    for name in "abc":
        _rgb(voc / f"JPEGImages/{name}.jpg", 4, 4)
    _palette_png(voc / "SegmentationClass/a.png", np.array([[0, 15, 15, 255]] * 4))
    _palette_png(voc / "SegmentationClass/b.png", np.zeros((4, 4)))
    ds = PascalVOC(voc, "train")
    assert ds[0]["label"][0].tolist() == [0, 15, 15, 255]  # palette indices, not colours
    sbd = tmp_path / "benchmark_RELEASE/dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("c\nb\n")
    (sbd / "val.txt").write_text("a\n")
    for name, value in (("a", 3), ("b", 4), ("c", 7)):
        scipy_io.savemat(sbd / f"cls/{name}.mat", {"GTcls": {"Segmentation": np.full((4, 4), value, np.uint8)}})
    assert convert_sbd(sbd, voc) == 2  # (SBD train+val + VOC train) - VOC val = {a, c}
    aug = PascalVOC(voc, "train_aug")
    labels = {p[1].stem: aug.load_label(p[1]) for p in aug.pairs}
    assert set(labels) == {"a", "c"}
    assert (labels["c"] == 7).all()
    assert labels["a"][0].tolist() == [0, 15, 15, 255]  # VOC's own label wins over SBD's
    with pytest.raises(DataError, match="convert-sbd"):
        PascalVOC(tmp_path, "train_aug")


def test_folder_dataset_and_check_data_report(tmp_path):
    root = tmp_path / "custom"
    root.mkdir()
    (root / "classes.txt").write_text("background 0 0 0\nroad 128 64 128\ncar\n")
    for name in ("ok", "big", "rgb", "mism"):
        _rgb(root / f"images/train/{name}.jpg")
    (root / "labels/train").mkdir(parents=True)
    Image.fromarray(np.full((8, 10), 2, np.uint8)).save(root / "labels/train/ok.png")
    Image.fromarray(np.full((8, 10), 9, np.uint8)).save(root / "labels/train/big.png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "labels/train/rgb.png")  # colour label by mistake
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(root / "labels/train/mism.png")
    _rgb(root / "images/train/nolabel.png")
    ds = FolderDataset(root, "train")
    assert ds.CLASSES == ("background", "road", "car") and ds.PALETTE[1] == (128, 64, 128)
    report = check_dataset(ds, progress=False)
    probs = {p["image"].rsplit("/", 1)[-1]: p["problem"] for p in report["problems"]}
    assert set(probs) == {"big.jpg", "rgb.jpg", "mism.jpg", "nolabel.png"}
    assert "[9]" in probs["big.jpg"] and "mode RGB" in probs["rgb.jpg"] and "size mismatch" in probs["mism.jpg"]
    assert "not found" in probs["nolabel.png"]
    assert report["class_pixels"] == {"background": 0, "road": 0, "car": 80}
    assert "[9] outside the 3 classes of FolderDataset (allowed: 0-2, 255; 255 = ignore)" in probs["big.jpg"]
    text = format_report(report)
    assert "class pixel shares (the 4 files with problems left out):" in text


def test_training_refuses_bad_data_with_the_report(tmp_path, capsys):
    root = tmp_path / "custom"
    root.mkdir()
    (root / "classes.txt").write_text("a\nb\n")
    for split in ("train", "val"):
        for i in range(2):
            _rgb(root / f"images/{split}/{i}.png", 16, 16)
            (root / f"labels/{split}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16), 5 if i else 1, np.uint8)).save(root / f"labels/{split}/{i}.png")
    rc = main(["train", "configs/camvid/fcn_effl0.yaml", "data.dataset=folder", f"data.root={root}",
               "model.pretrained=null", "train.iters=1", "train.batch_size=1", f"work_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "training refused" in err and "1.png has values [5]" in err
    assert main(["check-data", "configs/camvid/fcn_effl0.yaml", "data.dataset=folder", f"data.root={root}",
                 "--no-progress"]) == 1


def test_class_iou_agrees_with_official_cityscapes_evaluation(tmp_path):
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    from sceneparse.data.cityscapes import train_ids_to_label_ids
    from sceneparse.evaluation.metrics import ConfusionMatrix

    rng = np.random.default_rng(0)
    ds_root = tmp_path / "cs"
    gts, preds = [], []
    cm = ConfusionMatrix(19)
    for i in range(5):
        name = f"city_{i:06d}_000019"
        gt = rng.integers(0, 34, (40, 60), dtype=np.uint8)  # every labelId, evaluated or not
        gt[:10] = rng.choice([7, 26], (10, 60))  # some large agreeing regions
        pred_train = rng.integers(0, 19, (40, 60), dtype=np.uint8)
        pred_train[:10] = np.where(gt[:10] == 7, 0, 13)
        if i == 0:
            pred_train[pred_train == 18] = 17  # a class never predicted in this image
        gpath = ds_root / f"gtFine/val/city/{name}_gtFine_labelIds.png"
        ppath = tmp_path / f"pred/{name}.png"
        gpath.parent.mkdir(parents=True, exist_ok=True)
        ppath.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(gpath)
        Image.fromarray(train_ids_to_label_ids(pred_train)).save(ppath)  # Cityscapes submission format
        gts.append(str(gpath))
        preds.append(str(ppath))
        _rgb(ds_root / f"leftImg8bit/val/city/{name}_leftImg8bit.png", 40, 60)
        target = Cityscapes(ds_root, "val").load_label(gpath)
        cm.update(torch.from_numpy(pred_train.astype(np.int64)), torch.from_numpy(target.astype(np.int64)))
    args = ev.args
    args.evalInstLevelScore, args.quiet, args.JSONOutput = False, True, False
    official = ev.evaluateImgLists(preds, gts, args)["classScores"]
    ours = cm.compute(Cityscapes.CLASSES)["IoU"]
    for name, value in ours.items():
        ref = official[name]
        if value is None:
            assert np.isnan(ref)
        else:
            assert abs(value / 100 - ref) < 1e-6, name


def test_benchmark_protocol_scores(ade_root):
    from sceneparse.data import ADE20K, CamVid

    ade = ADE20K(ade_root, "validation")
    assert ade.extra_scores({"mIoU": 40.0, "aAcc": 80.0}, torch.zeros(150, 150))["score"] == 60.0
    assert CamVid.extra_scores(None, {"mIoU": 40.0, "aAcc": 80.0}, torch.zeros(11, 11)) == {}


def test_pascal_context_conversion_and_both_variants(tmp_path):
    pytest.importorskip("scipy.io")  # the extra that provides it
    import scipy.io

    from sceneparse.data import PascalContext, PascalContext59
    from sceneparse.data.pascal_context import CONTEXT59_CLASSES, CONTEXT59_IDS, convert_pascal_context

    ctx, voc = tmp_path / "context", tmp_path / "VOC2010"
    (ctx / "trainval").mkdir(parents=True)
    # official labels.txt: "<id>: <name>", 459 lines; fill the 59 used ids with their names
    names = {i: f"other{i}" for i in range(1, 460)}
    names.update(dict(zip(CONTEXT59_IDS, CONTEXT59_CLASSES)))
    (ctx / "labels.txt").write_text("\n".join(f"{i}: {n}" for i, n in names.items()) + "\n")
    # LabelMap uint16 with 459-class ids: aeroplane (2), wood (458), unused id 1 and 0 -> background
    lm = np.array([[2, 458, 1], [0, 440, 2]], np.uint16)
    for name in ("2008_000001", "2008_000002", "2008_000003"):
        scipy.io.savemat(ctx / "trainval" / f"{name}.mat", {"LabelMap": lm})
        _rgb(voc / "JPEGImages" / f"{name}.jpg", 2, 3)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets/Main/train.txt").write_text("2008_000001\n2008_000002\n2008_000099\n")  # 99: no annotation
    (voc / "ImageSets/Main/val.txt").write_text("2008_000003\n")
    assert main(["convert-pascal-context", str(ctx), str(voc), "--no-progress"]) == 0
    assert (voc / "ImageSets/SegmentationContext/train.txt").read_text().split() == ["2008_000001", "2008_000002"]
    ds60, ds59 = PascalContext(voc, "train"), PascalContext59(voc, "val")
    assert ds60.num_classes == 60 and ds59.num_classes == 59 and len(ds60) == 2 and len(ds59) == 1
    wall = CONTEXT59_CLASSES.index("wall")
    assert ds60.load_pair(0)[1].tolist() == [[1, 59, 0], [0, wall + 1, 1]]
    assert ds59.load_pair(0)[1].tolist() == [[0, 58, 255], [255, wall, 0]]
    # a different 459-class list is refused instead of silently mis-mapped
    (ctx / "labels.txt").write_text("2: person\n")
    with pytest.raises(DataError, match="id 2"):
        convert_pascal_context(ctx, voc, progress=False)


def test_coco_stuff_164k_png_and_10k_mat(tmp_path):
    pytest.importorskip("scipy.io")  # the extra that provides it
    import scipy.io

    from sceneparse.data import CocoStuff10k, CocoStuff164k
    from sceneparse.data.coco_stuff import COCO_STUFF_CLASSES

    assert len(COCO_STUFF_CLASSES) == 171 and COCO_STUFF_CLASSES[80] == "banner"
    root = tmp_path / "coco164k"
    _rgb(root / "images/val2017/000000000139.jpg", 2, 3)
    # 164k PNG values = COCO id - 1: person (0), street sign (11, unused), stop sign (12), wood (181), unlabeled
    Image.fromarray(np.array([[0, 11, 12], [181, 255, 91]], np.uint8)).save(
        _mk(root / "annotations/val2017/000000000139.png"))
    ds = CocoStuff164k(root, "val2017")
    assert ds.num_classes == 171
    assert ds.load_pair(0)[1].tolist() == [[0, 255, 11], [170, 255, 80]]
    # 10k: .mat field S = COCO id (1-based), 0 = unlabeled
    r10 = tmp_path / "cocostuff-10k"
    (r10 / "annotations").mkdir(parents=True)
    scipy.io.savemat(r10 / "annotations/COCO_train2014_000000000077.mat",
                     {"S": np.array([[1, 12, 13], [182, 0, 92]], np.uint16)})
    _rgb(r10 / "images/COCO_train2014_000000000077.jpg", 2, 3)
    (r10 / "imageLists").mkdir()
    (r10 / "imageLists/train.txt").write_text("COCO_train2014_000000000077\n")
    with pytest.raises(DataError, match="convert-cocostuff10k"):
        CocoStuff10k(r10, "train")
    assert main(["convert-cocostuff10k", str(r10), "--no-progress"]) == 0
    assert CocoStuff10k(r10, "train").load_pair(0)[1].tolist() == [[0, 255, 11], [170, 255, 80]]


def _mk(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
