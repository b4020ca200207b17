"""Validated batches as PostgreSQL binary COPY data, encoded by pgpq (Arrow -> PostgreSQL's wire format).

A binary COPY spares the server the text parsing a CSV COPY costs (timestamps most of all: about a
quarter of a CSV COPY of activity events on this stack), so the server, the slower side of a load, has
less to do than for a bare COPY of the landing file. The encoding itself runs in pgpq's native code.

Types on the wire (``validation.ARROW_TYPES`` in, PostgreSQL column types out):

===========  ====================  ===================================================================
raw column   Arrow in              wire
===========  ====================  ===================================================================
text         string                text (UTF-8 bytes)
jsonb        string                jsonb version 1 (PostgreSQL parses and checks the JSON text)
timestamptz  timestamp[us, UTC]    int64 microseconds since 2000-01-01 UTC
integer      int32                 int4
numeric      string (exact text)   numeric, encoded per value by psycopg's Decimal dumper, so the
                                   scale written in the file is kept ("19.00" stays 19.00)
===========  ====================  ===================================================================
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq.encoders import StringEncoderBuilder
from pgpq.schema import Jsonb
from psycopg.types.numeric import DecimalBinaryDumper

from cs_pipeline.ingest.sources import Source
from cs_pipeline.ingest.validation import ARROW_TYPES

RECORD_NUMBER = "_record_number"


class BinaryCopyEncoder:
    """Encodes one COPY's worth of validated batches of ``source``.

    The COPY's column list is ``columns`` (the source's columns, then ``_record_number``); send
    ``header()``, then ``encode(...)`` per batch, then ``trailer()``. One encoder per COPY statement.
    """

    def __init__(self, source: Source) -> None:
        self.columns: list[str] = [*source.column_names, RECORD_NUMBER]
        self._numeric = [c.name for c in source.columns if c.type == "numeric"]
        fields = [
            pa.field(c.name, pa.binary() if c.type == "numeric" else ARROW_TYPES[c.type]) for c in source.columns
        ]
        self._schema = pa.schema([*fields, pa.field(RECORD_NUMBER, pa.int64())])
        encoders = {f.name: ArrowToPostgresBinaryEncoder.infer_encoder(f) for f in self._schema}
        for column in source.columns:
            if column.type == "jsonb":
                encoders[column.name] = StringEncoderBuilder.new_with_output(self._schema.field(column.name), Jsonb())
        self._encoder = ArrowToPostgresBinaryEncoder.new_with_encoders(self._schema, encoders)
        self._decimal = DecimalBinaryDumper(Decimal)

    def header(self) -> bytes:
        """The binary COPY signature and header; send it first."""
        return self._encoder.write_header()

    def encode(self, valid: pa.Table, record_numbers: np.ndarray) -> bytes:
        """The COPY rows of ``valid`` (typed by ``validation.load_schema``) with their record numbers.

        Raises:
            decimal.InvalidOperation: a numeric column holds text that is not a decimal number
                (validation lets none through).
        """
        arrays = []
        for name in self._schema.names[:-1]:
            column = valid.column(name)
            arrays.append(self._numeric_wire(column) if name in self._numeric else column)
        arrays.append(pa.array(np.asarray(record_numbers, dtype=np.int64)))
        table = pa.Table.from_arrays(arrays, schema=self._schema)
        return b"".join(self._encoder.write_batch(batch) for batch in table.to_batches())

    def trailer(self) -> bytes:
        """The binary COPY trailer; send it last."""
        return self._encoder.finish()

    def _numeric_wire(self, column: pa.ChunkedArray) -> pa.Array:
        dump = self._decimal.dump
        return pa.array(
            [None if text is None else bytes(dump(Decimal(text))) for text in column.to_pylist()], type=pa.binary()
        )
