"""The napari plugin (``pip install wsistore[napari]``): ``napari --plugin wsistore ARCHIVE``
opens an archive at full resolution, restored as you pan (:mod:`.reader`, through
:mod:`.levels`). napari finds it through the ``napari.manifest`` entry
point (``napari.yaml`` here); nothing else in wsistore imports this package, napari or Qt."""
