"""Delivery of reject signals from the edge PC to the PLC (bridge MCU or Modbus RTU)."""
