"""Office and OpenDocument files for the preview tests, written here so that
every byte of a fixture is in plain sight: the smallest documents LibreOffice
opens (a line of text each), and hostile ones built from them.

Each function returns the bytes of one file.
"""

import base64
import hashlib
import io
import os
import shutil
import subprocess
import zipfile
import zlib


OOXML_TYPES = "http://schemas.openxmlformats.org/package/2006/content-types"
OOXML_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFICE_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
SHEET = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
SLIDE = "http://schemas.openxmlformats.org/presentationml/2006/main"
DRAWING = "http://schemas.openxmlformats.org/drawingml/2006/main"
ODF_NAMESPACES = (
    " ".join(
        f'xmlns:{prefix}="urn:oasis:names:tc:opendocument:xmlns:{name}:1.0"'
        for prefix, name in (
            ("office", "office"),
            ("text", "text"),
            ("table", "table"),
            ("draw", "drawing"),
            ("svg", "svg-compatible"),
            ("script", "script"),
        )
    )
    + ' xmlns:xlink="http://www.w3.org/1999/xlink"'
)
MANIFEST = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"
CONTENT_TYPES = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "rtf": "application/rtf",
}


def archive(parts, stored_first=None):
    """A zip of ``parts`` (name -> text or bytes), deflated; ``stored_first``
    is a ``(name, text)`` written first and uncompressed (ODF's mimetype)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        if stored_first:
            package.writestr(zipfile.ZipInfo(stored_first[0]), stored_first[1])
        for name, data in parts.items():
            package.writestr(name, data)
    return out.getvalue()


def parts_of(data):
    """The parts of the zip ``data``, name -> bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        return {name: package.read(name) for name in package.namelist()}


def ooxml_types(*overrides):
    entries = "".join(f'<Override PartName="/{part}" ContentType="{kind}"/>' for part, kind in overrides)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="{OOXML_TYPES}">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        f'<Default Extension="xml" ContentType="application/xml"/>{entries}</Types>'
    )


def relationships(*targets):
    """A relationships part: ``(type, target)`` pairs, ids rId1, rId2, ..."""
    entries = "".join(
        f'<Relationship Id="rId{number}" Type="{OFFICE_RELS}/{kind}" Target="{target}"/>'
        for number, (kind, target) in enumerate(targets, 1)
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{OOXML_RELS}">{entries}</Relationships>'


def word_document(body):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{WORD}" '
        f'xmlns:r="{OFFICE_RELS}"><w:body>{body}</w:body></w:document>'
    )


def word_paragraph(text):
    return f'<w:p><w:r><w:rPr><w:sz w:val="96"/></w:rPr><w:t>{text}</w:t></w:r></w:p>'


def docx(text="Hello docx"):
    """A Word document of one paragraph."""
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    return archive(
        {
            "[Content_Types].xml": ooxml_types(("word/document.xml", main)),
            "_rels/.rels": relationships(("officeDocument", "word/document.xml")),
            "word/document.xml": word_document(word_paragraph(text)),
        }
    )


def xlsx(text="Hello xlsx"):
    """A workbook of one sheet, ``text`` in A1."""
    base = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    return archive(
        {
            "[Content_Types].xml": ooxml_types(
                ("xl/workbook.xml", f"{base}.sheet.main+xml"),
                ("xl/worksheets/sheet1.xml", f"{base}.worksheet+xml"),
            ),
            "_rels/.rels": relationships(("officeDocument", "xl/workbook.xml")),
            "xl/workbook.xml": (
                f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{SHEET}" xmlns:r="{OFFICE_RELS}">'
                '<sheets><sheet name="One" sheetId="1" r:id="rId1"/></sheets></workbook>'
            ),
            "xl/_rels/workbook.xml.rels": relationships(("worksheet", "worksheets/sheet1.xml")),
            "xl/worksheets/sheet1.xml": (
                f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{SHEET}"><sheetData>'
                f'<row r="1"><c r="A1" t="inlineStr"><is><t>{text}</t></is></c></row>'
                "</sheetData></worksheet>"
            ),
        }
    )


def pptx(text="Hello pptx"):
    """A presentation of one slide with a text box."""
    base = "application/vnd.openxmlformats-officedocument.presentationml"
    names = f'xmlns:p="{SLIDE}" xmlns:a="{DRAWING}" xmlns:r="{OFFICE_RELS}"'
    shape = (
        '<p:sp><p:nvSpPr><p:cNvPr id="2" name="Text"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr>'
        '<p:spPr><a:xfrm><a:off x="914400" y="914400"/><a:ext cx="7315200" cy="1828800"/></a:xfrm>'
        '<a:prstGeom prst="rect"><a:avLst/></a:prstGeom></p:spPr>'
        f'<p:txBody><a:bodyPr/><a:p><a:r><a:rPr sz="4800"/><a:t>{text}</a:t></a:r></a:p></p:txBody></p:sp>'
    )
    return archive(
        {
            "[Content_Types].xml": ooxml_types(
                ("ppt/presentation.xml", f"{base}.presentation.main+xml"),
                ("ppt/slides/slide1.xml", f"{base}.slide+xml"),
            ),
            "_rels/.rels": relationships(("officeDocument", "ppt/presentation.xml")),
            "ppt/presentation.xml": (
                f'<?xml version="1.0" encoding="UTF-8"?><p:presentation {names}>'
                '<p:sldIdLst><p:sldId id="256" r:id="rId1"/></p:sldIdLst>'
                '<p:sldSz cx="9144000" cy="6858000"/><p:notesSz cx="6858000" cy="9144000"/></p:presentation>'
            ),
            "ppt/_rels/presentation.xml.rels": relationships(("slide", "slides/slide1.xml")),
            "ppt/slides/slide1.xml": (
                f'<?xml version="1.0" encoding="UTF-8"?><p:sld {names}><p:cSld><p:spTree>'
                '<p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr>'
                f"<p:grpSpPr/>{shape}</p:spTree></p:cSld></p:sld>"
            ),
        }
    )


def odf_manifest(kind, entries=""):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="{MANIFEST}" '
        f'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        f'manifest:media-type="{CONTENT_TYPES[kind]}"/>{entries}</manifest:manifest>'
    )


def odf_content(body):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODF_NAMESPACES} '
        f'office:version="1.2"><office:body>{body}</office:body></office:document-content>'
    )


def content_entry(extra=""):
    return (
        f'<manifest:file-entry manifest:full-path="content.xml" '
        f'manifest:media-type="text/xml"{extra}</manifest:file-entry>'
        if extra
        else '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    )


def odf(kind, body, extra_parts=None, manifest_entries=None):
    """An OpenDocument package of ``kind`` (odt, ods, odp) whose content is ``body``."""
    entries = content_entry() if manifest_entries is None else manifest_entries
    return archive(
        {"content.xml": odf_content(body), "META-INF/manifest.xml": odf_manifest(kind, entries), **(extra_parts or {})},
        stored_first=("mimetype", CONTENT_TYPES[kind]),
    )


def odt(text="Hello odt"):
    """A text document of one paragraph."""
    return odf("odt", f"<office:text><text:p>{text}</text:p></office:text>")


def ods(text="Hello ods"):
    """A spreadsheet, ``text`` in A1."""
    return odf(
        "ods",
        (
            '<office:spreadsheet><table:table table:name="One"><table:table-row>'
            f'<table:table-cell office:value-type="string"><text:p>{text}</text:p></table:table-cell>'
            "</table:table-row></table:table></office:spreadsheet>"
        ),
    )


def odp(text="Hello odp"):
    """A presentation of one page with a text frame."""
    return odf(
        "odp",
        (
            '<office:presentation><draw:page draw:name="One"><draw:frame svg:x="2cm" svg:y="2cm" '
            f'svg:width="20cm" svg:height="5cm"><draw:text-box><text:p>{text}</text:p>'
            "</draw:text-box></draw:frame></draw:page></office:presentation>"
        ),
    )


def rtf(text="Hello rtf"):
    """A Rich Text Format document of one paragraph."""
    return b"{\\rtf1\\ansi{\\fonttbl\\f0 Helvetica;}\\f0\\fs48 " + text.encode() + b"\\par}"


#: One small document of each kind LibreOffice converts.
DOCUMENTS = {"docx": docx, "xlsx": xlsx, "pptx": pptx, "odt": odt, "ods": ods, "odp": odp, "rtf": rtf}


# --- hostile files --------------------------------------------------------


def corrupt_docx():
    """A valid zip whose document part is random bytes: only LibreOffice
    finds out, and loads nothing."""
    parts = parts_of(docx())
    parts["word/document.xml"] = os.urandom(3000)
    return archive(parts)


def zip_bomb_docx(gib=1):
    """A docx of about 1 MB whose paragraph unpacks to ``gib`` GiB of text
    (LibreOffice alone would render a blank page of it after a while)."""
    out = io.BytesIO()
    parts = parts_of(docx())
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        for name, data in parts.items():
            if name != "word/document.xml":
                package.writestr(name, data)
        with package.open("word/document.xml", "w", force_zip64=True) as part:
            head, _, tail = word_document(word_paragraph("\0")).partition("\0")
            part.write(head.encode())
            chunk = b"A" * (1 << 20)
            for _ in range(gib * 1024):
                part.write(chunk)
            part.write(tail.encode())
    return out.getvalue()


def linked_odt(url, macro=False):
    """A text document that shows an image linked from ``url``, not
    embedded: LibreOffice fetches it while it converts, if it can reach
    ``url``. With ``macro``, a Basic macro bound to its opening, too."""
    listener = (
        (
            '<office:event-listeners><script:event-listener script:language="ooo:script" '
            'script:event-name="dom:load" xlink:href="vnd.sun.star.script:Standard.Module1.Main'
            '?language=Basic&amp;location=document"/></office:event-listeners>'
        )
        if macro
        else ""
    )
    body = (
        f"<office:text>{listener}<text:p>Linked picture</text:p><text:p>"
        '<draw:frame svg:width="5cm" svg:height="5cm" text:anchor-type="as-char">'
        f'<draw:image xlink:href="{url}" xlink:type="simple" xlink:show="embed" '
        'xlink:actuate="onLoad"/></draw:frame></text:p></office:text>'
    )
    if not macro:
        return odf("odt", body)
    module = (
        '<?xml version="1.0" encoding="UTF-8"?><script:module '
        'xmlns:script="http://openoffice.org/2000/script" script:name="Module1" '
        'script:language="StarBasic">Sub Main\n  Shell("touch", 0, "/tmp/asynctasks-macro-ran")\n'
        "End Sub</script:module>"
    )
    entries = content_entry() + (
        '<manifest:file-entry manifest:full-path="Basic/Standard/Module1.xml" manifest:media-type="text/xml"/>'
    )
    return odf("odt", body, manifest_entries=entries, extra_parts={"Basic/Standard/Module1.xml": module})


def encrypted_odt(password="secret"):
    """A text document encrypted with ``password`` as ODF 1.2 says
    (AES-256-CBC, a key by PBKDF2 of the password's SHA-256), as LibreOffice
    writes one under "Save with password". The ``openssl`` command encrypts."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is missing (it encrypts a test document): apt-get install openssl")
    plain = odf_content("<office:text><text:p>Secret text</text:p></office:text>").encode()
    packed = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as in the zip
    compressed = packed.compress(plain) + packed.flush()
    salt, iv = os.urandom(16), os.urandom(16)
    start_key = hashlib.sha256(password.encode()).digest()
    key = hashlib.pbkdf2_hmac("sha1", start_key, salt, 100_000, 32)
    encrypted = subprocess.run(
        [openssl, "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex()],
        input=compressed,
        capture_output=True,
        check=True,
    ).stdout
    checksum = hashlib.sha256(compressed[:1024]).digest()

    def b64(data):
        return base64.b64encode(data).decode()

    encryption = (
        f' manifest:size="{len(plain)}">'
        "<manifest:encryption-data manifest:checksum-type="
        f'"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0#sha256-1k" manifest:checksum="{b64(checksum)}">'
        '<manifest:algorithm manifest:algorithm-name="http://www.w3.org/2001/04/xmlenc#aes256-cbc" '
        f'manifest:initialisation-vector="{b64(iv)}"/>'
        "<manifest:start-key-generation manifest:start-key-generation-name="
        '"http://www.w3.org/2000/09/xmldsig#sha256" manifest:key-size="32"/>'
        '<manifest:key-derivation manifest:key-derivation-name="PBKDF2" manifest:key-size="32" '
        f'manifest:iteration-count="100000" manifest:salt="{b64(salt)}"/>'
        "</manifest:encryption-data>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr(zipfile.ZipInfo("mimetype"), CONTENT_TYPES["odt"])
        package.writestr(zipfile.ZipInfo("content.xml"), encrypted)  # stored: it is encrypted
        package.writestr("META-INF/manifest.xml", odf_manifest("odt", content_entry(encryption)))
    return out.getvalue()
